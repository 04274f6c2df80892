defmodule DynamicSrv.Test.Netns do
  @moduledoc false
  # Private network namespaces the tests create for themselves (iproute2's `ip netns`), for
  # what the host's loopback cannot give: several IPv6 addresses, or links that can be cut.
  # Only namespaces created here are ever deleted, by the exact name created.

  @doc "Whether this machine lets us create network namespaces (root and iproute2)."
  def available? do
    System.find_executable("ip") != nil and elem(System.cmd("id", ["-u"]), 0) == "0\n"
  end

  @doc "Creates a namespace with its loopback up; returns its name."
  def create! do
    name = "dsrv-#{:os.getpid()}-#{System.unique_integer([:positive])}"
    ip!(["netns", "add", name])
    exec!(name, ["ip", "link", "set", "lo", "up"])
    name
  end

  @doc "Deletes a namespace this module created, and its files under /etc/netns."
  def destroy("dsrv-" <> _ = name) do
    System.cmd("ip", ["netns", "del", name], stderr_to_stdout: true)
    File.rm_rf!(etc_dir(name))
    :ok
  end

  @doc """
  Gives `ns` its own /etc/resolv.conf: `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf
  over /etc/resolv.conf for every process it starts in `ns` (so for Peer and DnsServer).
  Write it before starting them; destroy/1 removes it.
  """
  def put_resolv_conf!("dsrv-" <> _ = ns, text) do
    File.mkdir_p!(etc_dir(ns))
    File.write!(Path.join(etc_dir(ns), "resolv.conf"), text)
  end

  defp etc_dir(ns), do: Path.join("/etc/netns", ns)

  @doc "Adds an address (CIDR, e.g. `\"fd00::2/128\"`) to `dev` (default `lo`) in `ns`."
  def add_address!(ns, cidr, dev \\ "lo") do
    exec!(ns, ["ip", "addr", "add", cidr, "dev", dev] ++ nodad(cidr))
  end

  # IPv6 addresses are usable only after duplicate address detection, unless told not to wait.
  defp nodad(cidr), do: if(String.contains?(cidr, ":"), do: ["nodad"], else: [])

  @doc "Runs a command inside `ns`, raising on a non-zero exit; returns its output."
  def exec!(ns, [cmd | args]) do
    ip!(["netns", "exec", ns, cmd | args])
  end

  @doc """
  Joins namespaces `ns_a` and `ns_b` with a veth pair, addresses its ends (`cidr_a`, `cidr_b`,
  e.g. `"192.0.2.1/24"`) and brings them up; returns the two device names `{dev_a, dev_b}`.
  Destroying either namespace removes the pair.
  """
  def veth_pair!(ns_a, cidr_a, ns_b, cidr_b) do
    # Device names are at most 15 bytes.
    id = rem(System.unique_integer([:positive]), 1_000_000)
    {dev_a, dev_b} = {"dsrv#{id}a", "dsrv#{id}b"}
    ip!(~w(link add #{dev_a} netns #{ns_a} type veth peer name #{dev_b} netns #{ns_b}))
    add_address!(ns_a, cidr_a, dev_a)
    add_address!(ns_b, cidr_b, dev_b)
    set_link!(ns_a, dev_a, :up)
    set_link!(ns_b, dev_b, :up)
    {dev_a, dev_b}
  end

  @doc """
  Sets a link of `ns` `:up` or `:down`. Down, the subnet's route goes with it (peers become
  unreachable); the addresses stay, and up again restores the route.
  """
  def set_link!(ns, dev, state) when state in [:up, :down] do
    exec!(ns, ["ip", "link", "set", dev, Atom.to_string(state)])
  end

  @doc """
  `{executable, args}` that run `executable args` inside `ns` (or unchanged when `ns` is nil),
  for `Port.open({:spawn_executable, ...})`. `ip netns exec` execs in place, so the OS pid
  of the port is the program's own.
  """
  def wrap(nil, executable, args), do: {executable, args}

  def wrap(ns, executable, args),
    do: {System.find_executable("ip"), ["netns", "exec", ns, executable | args]}

  defp ip!(args) do
    case System.cmd("ip", args, stderr_to_stdout: true) do
      {out, 0} -> out
      {out, status} -> raise "ip #{Enum.join(args, " ")} exited with #{status}: #{out}"
    end
  end
end
