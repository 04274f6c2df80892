defmodule DynamicSrv.Epmd do
  @moduledoc """
  An epmd module for `-epmd_module`: no epmd daemon, ports announced and found through DNS.

      # rel/env.sh.eex, or the environment of `iex`/`elixir`
      export ELIXIR_ERL_OPTIONS="-start_epmd false -epmd_module Elixir.DynamicSrv.Epmd"
      export ERL_DIST_PORT=24501                       # this node's listen port (Nomad: ${NOMAD_PORT_dist})
      export DYNAMIC_SRV_NAMESERVERS=127.0.0.1:8600    # optional; see DynamicSrv.Nameservers

  A node `node-a@my-svc.service.consul` is reached at the address and port of the SRV record
  `node-a.my-svc.service.consul` (the additional section's A/AAAA record of its target, or an
  A/AAAA query when the answer lacks it). With `DYNAMIC_SRV_PORT_MODE=name` the port is the
  trailing digits of the node name (`app-4370@host`), with `static` every node uses
  `ERL_DIST_PORT`; in both the address is the host's A/AAAA record.

  The configuration is read when distribution starts. A bad value stops distribution with one
  line on stderr naming the variable, its value and what is expected; when the VM's own boot
  starts distribution (`-name`/`-sname`, a release) the VM then exits with status 1, without
  supervisor reports or `erl_crash.dump`. See the README for every variable. Without
  `DYNAMIC_SRV_NAMESERVERS` the DNS servers are those of OTP's inetrc, if it names any, else
  `/etc/resolv.conf` (`DynamicSrv.Nameservers`).

  Answers are cached (at least `DYNAMIC_SRV_MIN_TTL_MS`, default 5000 ms, even for TTL 0
  records) and answered synchronously; a miss runs one lookup on the library's own thread,
  bounded by `DYNAMIC_SRV_LOOKUP_TIMEOUT_MS`. While DNS fails, expired answers keep being
  served for up to `DYNAMIC_SRV_MAX_STALE_S` seconds, so a DNS outage does not cut a cluster.
  """

  alias DynamicSrv.Native

  # OTP 25+ supports only distribution protocol version 6.
  @dist_version 6
  @engine {__MODULE__, :engine}
  @registered {__MODULE__, :registered}

  @typep name :: charlist() | String.t() | atom()

  @doc "Called by `net_sup` when distribution starts: loads the NIF and reads the environment."
  @spec start_link() :: :ignore | {:error, {:dynamic_srv, String.t()}}
  def start_link do
    case configure() do
      {:ok, _} -> :ignore
      {:error, message} -> refuse(message)
    end
  end

  @doc "The port to listen on: `ERL_DIST_PORT`, the name's digits, or 0 for release helpers."
  @spec listen_port_please(name(), name()) :: {:ok, :inet.port_number()} | {:error, term()}
  def listen_port_please(name, host) do
    with {:ok, {engine, _}} <- engine(),
         {:ok, port} <- nif_call(fn -> Native.listen_port(engine, node_string(name, host)) end) do
      {:ok, port}
    else
      {:error, message} -> refuse(message)
      {:error, :internal_error, message} -> refuse(message)
    end
  end

  @doc "Records this node's name and port. Creation `-1` makes OTP pick a random 32-bit one."
  @spec register_node(name(), :inet.port_number(), atom()) :: {:ok, -1}
  def register_node(name, port, _driver_or_family \\ :inet_tcp) do
    :persistent_term.put(@registered, {to_charlist(name), port})
    {:ok, -1}
  end

  @doc """
  The IP and port of node `name@host`. Inside `net_kernel` (OTP 25 and 27 ask there first) a
  cache miss answers `{:ok, unspecified_ip}` at once (OTP only checks the shape there); the
  connection's setup process then asks again and waits for the bounded lookup. OTP 29 asks
  first from a process it spawns for the purpose, which waits for the lookup itself.
  """
  @spec address_please(name(), name(), :inet | :inet6) ::
          {:ok, :inet.ip_address(), :inet.port_number(), 6}
          | {:ok, :inet.ip_address()}
          | {:error, atom()}
  def address_please(name, host, family) do
    node = node_string(name, host)

    with {:ok, {engine, timeout}} <- engine() do
      case nif_call(fn -> Native.lookup_cached(engine, node, family) end) do
        {:ok, ip, port} ->
          {:ok, ip, port, @dist_version}

        :miss ->
          if in_net_kernel?(),
            do: {:ok, unspecified(family)},
            else: await_lookup(engine, node, family, timeout)

        {:error, reason, _message} ->
          {:error, reason}
      end
    else
      {:error, _message} -> {:error, :not_configured}
    end
  end

  @doc "The port of node `name` at `ip`; OTP only asks when `address_please/3` gave no port."
  @spec port_please(name(), :inet.ip_address(), timeout()) ::
          {:port, :inet.port_number(), 6} | :noport
  def port_please(name, ip, _timeout \\ :infinity) do
    with {:ok, {engine, _}} <- engine(),
         {:ok, port} <- nif_call(fn -> Native.port_please(engine, to_string(name), ip) end) do
      {:port, port, @dist_version}
    else
      _ -> :noport
    end
  end

  @doc "This node's own entry (there is no daemon to ask for others)."
  @spec names(name()) :: {:ok, [{charlist(), :inet.port_number()}]}
  def names(_host \\ nil) do
    case :persistent_term.get(@registered, nil) do
      nil -> {:ok, []}
      entry -> {:ok, [entry]}
    end
  end

  defp configure do
    with :ok <- Native.load(),
         :ok <- DynamicSrv.LogForwarder.ensure_started(),
         {:ok, engine} <- Native.configure(DynamicSrv.Nameservers.environment()) do
      state = {engine, Native.lookup_timeout_ms(engine)}
      :persistent_term.put(@engine, state)
      {:ok, state}
    else
      # Never keep answering with an earlier configuration once the environment is bad.
      {:error, _message} = error ->
        :persistent_term.erase(@engine)
        error
    end
  end

  defp engine do
    case :persistent_term.get(@engine, nil) do
      nil -> configure()
      state -> {:ok, state}
    end
  end

  # Runs in a connection's setup process (or OTP 29's selection process), never in
  # net_kernel (see in_net_kernel?/0). The DNS
  # thread bounds the lookup by the timeout and drops an answer it could only deliver more than
  # a second after that, and we wait two: no answer arrives after we stop waiting. `:no_reply`
  # (not `:timeout`) says the DNS thread itself did not answer in time, which it always should.
  defp await_lookup(engine, node, family, timeout) do
    started = System.monotonic_time()
    result = lookup_now(engine, node, family, timeout)
    DynamicSrv.Telemetry.lookup_done(node, family, started, result)
    result
  end

  defp lookup_now(engine, node, family, timeout) do
    # Misses are rare and already wait on DNS: the place to bring back a killed forwarder.
    DynamicSrv.LogForwarder.ensure_started()
    tag = make_ref()

    case nif_call(fn -> Native.lookup(engine, node, family, self(), tag) end) do
      :ok ->
        receive do
          {^tag, {:ok, ip, port}} -> {:ok, ip, port, @dist_version}
          {^tag, {:error, reason, _message}} -> {:error, reason}
        after
          timeout + 2_000 -> {:error, :no_reply}
        end

      {:error, reason} ->
        {:error, reason}

      {:error, reason, _message} ->
        {:error, reason}
    end
  end

  # OTP 25 and 27 ask twice per connection: first in the net_kernel process, where the dist
  # module's select/1 only checks that the answer has the `{:ok, _}` shape, then in the
  # connection's own setup process, which uses the address. A miss waited for in net_kernel
  # would hold up every other connection (and nodes/0, monitors, ticks) for the whole lookup,
  # so there the answer is "yes, this dist module handles it" and the setup process does the
  # real lookup. OTP 29 runs select/1 in a process spawned per connection attempt
  # (net_kernel:setup_check/5), never in net_kernel: this is then never true, that process
  # waits for the bounded lookup (caching the answer for the setup process's own call), and
  # net_kernel still never waits on DNS (test/chaos/blackhole_dns_test.exs checks it).
  defp in_net_kernel?, do: Process.whereis(:net_kernel) == self()

  defp unspecified(:inet6), do: {0, 0, 0, 0, 0, 0, 0, 0}
  defp unspecified(_inet), do: {0, 0, 0, 0}

  defp node_string(name, host), do: "#{name}@#{host}"

  # The callbacks run inside net_kernel or a connection's setup process: a NIF bug (rustler
  # turns a Rust panic into an ErlangError) must fail one connection attempt, not crash
  # net_kernel and with it every connection.
  defp nif_call(fun) do
    fun.()
  rescue
    error in [ErlangError, ArgumentError] ->
      {:error, :internal_error, Exception.message(error)}
  end

  # The one line is written straight to the emulator's stderr, synchronously and whole: OTP 27+
  # start `standard_error` before `net_sup` (OTP 25 after it), and a line sent through it at
  # this point comes out after net_kernel's own `erlang:display_string/1` output, in the
  # middle of its line, with non-Latin-1 characters escaped (`\x{FF14}`). `display_string/1`
  # writes UTF-8 on 25-29.
  #
  # While the VM boots (`-name`/`-sname`, kernel starting net_sup) a refusal ends the VM right
  # here with status 1 (see DynamicSrv.Epmd.Refusal): returning the error would bury the line
  # under supervisor reports, "Kernel pid terminated" and an erl_crash.dump, and from
  # listen_port_please/2 OTP has no error clause at all (`case_clause`). Once the VM runs
  # (`Node.start/2`), the error is returned to the caller and the VM stays up.
  defp refuse(message) do
    line = "DynamicSrv.Epmd: distribution not started: " <> IO.chardata_to_string(message)
    DynamicSrv.Epmd.Refusal.refuse(line)
    {:error, {:dynamic_srv, message}}
  end
end
