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

  @doc "Deletes a namespace this module created."
  def destroy("dsrv-" <> _ = name) do
    System.cmd("ip", ["netns", "del", name], stderr_to_stdout: true)
    :ok
  end

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
