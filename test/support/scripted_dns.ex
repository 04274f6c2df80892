defmodule DynamicSrv.Test.ScriptedDns do
  @moduledoc false
  # A real DNS server (UDP and TCP on one free loopback port) whose behaviour a test switches
  # at runtime, to put faults between the nodes and a real dnsmasq:
  #
  #   * `:forward` — relays every query to the upstream (a real dnsmasq) over the same
  #     transport and returns its answer byte for byte;
  #   * `{:rcode, :servfail | :refused}` — answers every query with that rcode, no records;
  #   * `:truncate_tcp_refused` — UDP answers carry TC=1 and no records, and TCP is refused:
  #     the listener and every open TCP connection are closed;
  #   * `:blackhole` — reads every query (UDP and TCP) and never answers;
  #   * `{:delay, ms, mode}` — answers as `mode` does, each answer `ms` late (a slow or
  #     overloaded server);
  #   * `{:rotate, groups, n}` — like `{:answer, ...}` with a random `n` of `groups` (lists of
  #     records, e.g. an SRV record and its target's A record) per query, as a server under a
  #     record-count cap answers (Route 53 multivalue answers: 8);
  #   * `{:answer, records}` — answers queries for the names `records` own with exactly those
  #     records (see `DynamicSrv.Test.ScriptedDns.Wire`: raw labels, any bytes, any length),
  #     the A/AAAA records of the SRV targets in the additional section; TC=1 over UDP when
  #     the answer is bigger than the client's EDNS size. Other names are forwarded;
  #   * `{:forge, fun}` — a lying server: `fun.(name, type)` (lowercase dotted name, type atom)
  #     returns `{answers, additional}` or `{answers, additional, Wire.response/4 options}`,
  #     sent as they are whatever names the records own, or `nil` to forward.
  #
  # Counts queries per mode and transport, keeps a log of them, and the most TCP connections
  # that were open at once (`peak_connections/1`).

  use GenServer

  alias DynamicSrv.Test.ScriptedDns.Wire

  defstruct [:pid, :port]

  @type mode ::
          :forward
          | {:rcode, :servfail | :refused}
          | :truncate_tcp_refused
          | :blackhole
          | {:delay, pos_integer(), mode()}
          | {:answer, [Wire.wire_record()]}
          | {:rotate, [[Wire.wire_record()]], pos_integer()}
          | {:forge, (String.t(), atom() -> nil | tuple())}

  @upstream_timeout 5_000

  @doc "Starts the server on a free loopback port. `upstream` is the `{ip, port}` to forward to."
  @spec start!({:inet.ip_address(), :inet.port_number()} | nil, mode()) :: %__MODULE__{}
  def start!(upstream, mode \\ :forward) do
    {:ok, pid} = GenServer.start(__MODULE__, {upstream, mode})
    %__MODULE__{pid: pid, port: GenServer.call(pid, :port)}
  end

  @doc "Switches the mode; queries read after this call see the new one."
  @spec set_mode(%__MODULE__{}, mode()) :: :ok
  def set_mode(%__MODULE__{pid: pid}, mode), do: GenServer.call(pid, {:set_mode, mode})

  @doc "Query counts: `%{{mode_name, :udp | :tcp} => count}` (mode_name e.g. `:servfail`)."
  @spec counts(%__MODULE__{}) :: %{{atom(), :udp | :tcp} => non_neg_integer()}
  def counts(%__MODULE__{pid: pid}), do: GenServer.call(pid, :counts)

  @doc "Total queries seen in mode `mode_name`, both transports."
  @spec count(%__MODULE__{}, atom()) :: non_neg_integer()
  def count(server, mode_name) do
    server
    |> counts()
    |> Enum.reduce(0, fn {{m, _}, n}, acc -> if m == mode_name, do: acc + n, else: acc end)
  end

  @doc "The queries seen, oldest first: `[{mode_name, transport, dotted_name, type}]`."
  @spec log(%__MODULE__{}) :: [{atom(), :udp | :tcp, String.t(), atom()}]
  def log(%__MODULE__{pid: pid}), do: GenServer.call(pid, :log)

  @doc "The most TCP connections that were open at the same time."
  @spec peak_connections(%__MODULE__{}) :: non_neg_integer()
  def peak_connections(%__MODULE__{pid: pid}), do: GenServer.call(pid, :peak_connections)

  @doc "The server as a `DYNAMIC_SRV_NAMESERVERS` entry."
  @spec nameserver(%__MODULE__{}) :: String.t()
  def nameserver(%__MODULE__{port: port}), do: "127.0.0.1:#{port}"

  @spec stop(%__MODULE__{}) :: :ok
  def stop(%__MODULE__{pid: pid}) do
    if Process.alive?(pid), do: GenServer.stop(pid, :normal, 10_000)
    :ok
  catch
    :exit, _ -> :ok
  end

  @doc "The short name counts and logs use for a mode."
  @spec mode_name(mode()) :: atom()
  def mode_name({:rcode, rcode}), do: rcode
  def mode_name({:answer, _}), do: :answer
  def mode_name({:rotate, _, _}), do: :rotate
  def mode_name({:forge, _}), do: :forge
  def mode_name({:delay, _, _}), do: :delay
  def mode_name(mode) when is_atom(mode), do: mode

  # --- server ------------------------------------------------------------------------------

  @impl true
  def init({upstream, mode}) do
    Process.flag(:trap_exit, true)
    port = DynamicSrv.Test.Ports.free()

    {:ok, udp} =
      :gen_udp.open(port, [:binary, ip: {127, 0, 0, 1}, active: true, recbuf: 1_000_000])

    state = %{
      port: port,
      udp: udp,
      listener: nil,
      acceptor: nil,
      connections: MapSet.new(),
      peak_connections: 0,
      upstream: upstream,
      mode: mode,
      counts: %{},
      log: []
    }

    {:ok, apply_mode(state, mode)}
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}
  def handle_call(:counts, _from, state), do: {:reply, state.counts, state}
  def handle_call(:log, _from, state), do: {:reply, Enum.reverse(state.log), state}
  def handle_call(:peak_connections, _from, state), do: {:reply, state.peak_connections, state}

  def handle_call({:set_mode, mode}, _from, state),
    do: {:reply, :ok, %{apply_mode(state, mode) | mode: mode}}

  # A TCP connection process asks what to do with the query it read.
  def handle_call({:tcp_query, packet}, _from, state) do
    {action, state} = decide(packet, :tcp, state)
    {:reply, action, state}
  end

  @impl true
  def handle_info({:udp, udp, ip, port, packet}, %{udp: udp} = state) do
    {action, state} = decide(packet, :udp, state)

    case action do
      {:reply, bytes} ->
        :gen_udp.send(udp, ip, port, bytes)

      {:forward, upstream} ->
        spawn(fn -> forward_udp(udp, {ip, port}, packet, upstream) end)

      {:reply, bytes, delay_ms} ->
        spawn(fn ->
          Process.sleep(delay_ms)
          :gen_udp.send(udp, ip, port, bytes)
        end)

      {:forward, upstream, delay_ms} ->
        spawn(fn ->
          Process.sleep(delay_ms)
          forward_udp(udp, {ip, port}, packet, upstream)
        end)

      :drop ->
        :ok
    end

    {:noreply, state}
  end

  def handle_info({:accepted, pid}, state) do
    # Linked here too, so its end (an EXIT, :noproc if it already ended) leaves the count.
    Process.link(pid)
    connections = MapSet.put(state.connections, pid)
    peak = max(state.peak_connections, MapSet.size(connections))
    {:noreply, %{state | connections: connections, peak_connections: peak}}
  end

  def handle_info({:EXIT, pid, _reason}, state),
    do: {:noreply, %{state | connections: MapSet.delete(state.connections, pid)}}

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    close_tcp(state)
    :gen_udp.close(state.udp)
  end

  # TCP is refused only in :truncate_tcp_refused; every other mode listens.
  defp apply_mode(state, :truncate_tcp_refused), do: close_tcp(state)
  defp apply_mode(state, {:delay, _ms, mode}), do: apply_mode(state, mode)
  defp apply_mode(%{listener: nil} = state, _mode), do: open_tcp(state)
  defp apply_mode(state, _mode), do: state

  defp open_tcp(state) do
    {:ok, listener} =
      :gen_tcp.listen(state.port, [
        :binary,
        ip: {127, 0, 0, 1},
        active: false,
        reuseaddr: true,
        packet: 2,
        backlog: 128
      ])

    server = self()
    acceptor = spawn_link(fn -> accept_loop(listener, server) end)
    :ok = :gen_tcp.controlling_process(listener, acceptor)
    %{state | listener: listener, acceptor: acceptor}
  end

  defp close_tcp(%{listener: nil} = state), do: state

  defp close_tcp(state) do
    for pid <- [state.acceptor | MapSet.to_list(state.connections)] do
      Process.unlink(pid)
      Process.exit(pid, :kill)
    end

    :gen_tcp.close(state.listener)
    %{state | listener: nil, acceptor: nil, connections: MapSet.new()}
  end

  defp decide(packet, transport, state) do
    case Wire.decode_query(packet) do
      {:ok, query} ->
        name = mode_name(state.mode)
        key = {name, transport}
        entry = {name, transport, Enum.join(query.labels, "."), Wire.type_name(query.qtype)}

        state = %{
          state
          | counts: Map.update(state.counts, key, 1, &(&1 + 1)),
            log: Enum.take([entry | state.log], 20_000)
        }

        {action(state.mode, query, transport, state.upstream), state}

      :error ->
        {:drop, state}
    end
  end

  defp action(:forward, _query, _transport, nil), do: :drop
  defp action(:forward, _query, _transport, upstream), do: {:forward, upstream}

  defp action({:rcode, rcode}, query, _transport, _upstream),
    do: {:reply, Wire.empty_response(query, rcode)}

  defp action(:truncate_tcp_refused, query, _transport, _upstream),
    do: {:reply, Wire.truncated(query)}

  defp action(:blackhole, _query, _transport, _upstream), do: :drop

  defp action({:delay, ms, mode}, query, transport, upstream) do
    case action(mode, query, transport, upstream) do
      {:reply, bytes} -> {:reply, bytes, ms}
      {:forward, upstream} -> {:forward, upstream, ms}
      :drop -> :drop
    end
  end

  defp action({:rotate, groups, n}, query, transport, upstream) do
    records = groups |> Enum.take_random(n) |> List.flatten()
    action({:answer, records}, query, transport, upstream)
  end

  defp action({:forge, fun}, query, transport, upstream) do
    name = query.labels |> normalize() |> Enum.join(".")

    case fun.(name, Wire.type_name(query.qtype)) do
      nil -> action(:forward, query, transport, upstream)
      {answers, additional} -> {:reply, Wire.response(query, answers, additional)}
      {answers, additional, opts} -> {:reply, Wire.response(query, answers, additional, opts)}
    end
  end

  defp action({:answer, records}, query, transport, upstream) do
    case crafted_answer(records, query) do
      nil ->
        action(:forward, query, transport, upstream)

      bytes when transport == :udp and byte_size(bytes) > query.udp_size ->
        {:reply, Wire.truncated(query)}

      bytes ->
        {:reply, bytes}
    end
  end

  # The records owned by the queried name (case-insensitively) and of its type, plus the
  # addresses of their SRV targets; nil when the records own no such name.
  defp crafted_answer(records, query) do
    qname = normalize(query.labels)
    owned = Enum.filter(records, &(normalize(Wire.labels(elem(&1, 1))) == qname))

    if owned == [] do
      nil
    else
      type = Wire.type_name(query.qtype)
      answers = Enum.filter(owned, &(elem(&1, 0) == type))

      targets =
        for {:srv, _, _, _, _, target} <- answers, into: MapSet.new(), do: Wire.labels(target)

      additional =
        Enum.filter(records, fn record ->
          elem(record, 0) in [:a, :aaaa] and MapSet.member?(targets, Wire.labels(elem(record, 1)))
        end)

      Wire.response(query, answers, additional)
    end
  end

  defp normalize(labels), do: Enum.map(labels, &String.downcase/1)

  defp accept_loop(listener, server) do
    case :gen_tcp.accept(listener) do
      {:ok, socket} ->
        pid = spawn(fn -> receive(do: (:go -> serve_tcp(socket, server))) end)
        :ok = :gen_tcp.controlling_process(socket, pid)
        # Linked to the server, not to the acceptor, so closing TCP kills them one by one.
        send(server, {:accepted, pid})
        Process.link(pid)
        send(pid, :go)
        accept_loop(listener, server)

      {:error, _} ->
        :ok
    end
  end

  defp serve_tcp(socket, server) do
    case :gen_tcp.recv(socket, 0) do
      {:ok, packet} ->
        case GenServer.call(server, {:tcp_query, packet}, 30_000) do
          {:reply, bytes} -> :gen_tcp.send(socket, bytes)
          {:reply, bytes, delay_ms} -> Process.sleep(delay_ms) && :gen_tcp.send(socket, bytes)
          {:forward, upstream} -> relay_tcp(socket, packet, upstream)
          {:forward, upstream, delay_ms} -> relay_tcp(socket, packet, upstream, delay_ms)
          # Blackhole: keep reading, never answer.
          :drop -> :ok
        end
        |> case do
          {:error, _} -> :gen_tcp.close(socket)
          _ -> serve_tcp(socket, server)
        end

      {:error, _} ->
        :gen_tcp.close(socket)
    end
  end

  defp forward_udp(udp, {ip, port}, packet, {up_ip, up_port}) do
    {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: false])

    with :ok <- :gen_udp.send(socket, up_ip, up_port, packet),
         {:ok, {_, _, answer}} <- :gen_udp.recv(socket, 0, @upstream_timeout) do
      :gen_udp.send(udp, ip, port, answer)
    end

    :gen_udp.close(socket)
  end

  # One upstream connection per query; an upstream failure closes the client's connection,
  # as a failing server would.
  defp relay_tcp(client, packet, {up_ip, up_port}, delay_ms \\ 0) do
    Process.sleep(delay_ms)
    opts = [:binary, active: false, packet: 2]

    with {:ok, upstream} <- :gen_tcp.connect(up_ip, up_port, opts, @upstream_timeout),
         :ok <- :gen_tcp.send(upstream, packet),
         {:ok, answer} <- :gen_tcp.recv(upstream, 0, @upstream_timeout) do
      :gen_tcp.close(upstream)
      :gen_tcp.send(client, answer)
    end
  end
end
