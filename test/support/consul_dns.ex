defmodule DynamicSrv.Test.ConsulDns do
  @moduledoc false
  # A DNS server (UDP and TCP on one free loopback port) that answers as a Consul agent's DNS
  # interface does, so tests can put real nodes in front of Consul's behaviour without Consul:
  # instances shuffled on every query, UDP answers silently trimmed to 3 records (no EDNS) or
  # to the client's EDNS size, no TC bit unless `enable_truncate`, TCP complete up to Consul's
  # cap, `.addr.` targets with node-meta TXT records, TTL 0. The rules, and the Consul source
  # each comes from, are in `DynamicSrv.Test.ConsulDns.Answer`; this module holds the catalog
  # and the sockets.
  #
  # Queries are answered concurrently, each in its own process (a TCP connection's, or one
  # per UDP packet), from the catalog the owner publishes in a protected ETS table, as
  # Consul's agent answers on every core: one process answering 100 nodes' synchronized
  # polls in turn answered the last ones late enough for their resolvers to ask again. The
  # owner alone writes the catalog, stats and log, in the order queries were answered.

  use GenServer

  alias DynamicSrv.Test.ConsulDns.Answer
  alias DynamicSrv.Test.ScriptedDns.Wire

  defstruct [:pid, :port]

  @defaults %{
    dc: "dc1",
    enable_truncate: false,
    udp_answer_limit: 3,
    service_ttl: 0,
    node_ttl: 0,
    node_meta_txt: true
  }

  # What every Consul 1.16+ agent puts in its node meta, hence in the TXT records.
  @default_node_meta %{"consul-network-segment" => "", "consul-version" => "1.18.0"}

  @log_limit 20_000
  # Calls wait behind queries; a benchmark VM at load 200 can take seconds to get to them.
  @call_timeout 30_000

  @doc """
  Starts the server on a free loopback port. Options (Consul's `dns_config` names):
  `dc` ("dc1"), `enable_truncate` (false), `udp_answer_limit` (3), `service_ttl` (0, seconds),
  `node_ttl` (0), `node_meta_txt` (true: `enable_additional_node_meta_txt`).
  """
  @spec start!(keyword()) :: %__MODULE__{}
  def start!(opts \\ []) do
    config = Map.merge(@defaults, Map.new(opts))
    {:ok, pid} = GenServer.start(__MODULE__, config)
    %__MODULE__{pid: pid, port: GenServer.call(pid, :port)}
  end

  @doc """
  Registers (or replaces) instance `id` of `service`. `instance`: `node` (name, default
  "node-<id>"), `address` (the service address, an IP as Nomad registers it, or nil for a
  service registered without one: then the target is the node's name), `node_address`
  (default: `address`, else 127.0.0.1), `port`, `node_meta` (default Consul's own meta),
  `tags` ([]).
  """
  @spec register(%__MODULE__{}, String.t(), term(), map() | keyword()) :: :ok
  def register(%__MODULE__{pid: pid}, service, id, instance) do
    instance = Map.new(instance)
    address = Map.get(instance, :address)

    instance = %{
      node: Map.get(instance, :node, "node-#{id}"),
      address: address,
      node_address: Map.get(instance, :node_address, address || {127, 0, 0, 1}),
      port: Map.fetch!(instance, :port),
      node_meta: Map.get(instance, :node_meta, @default_node_meta),
      tags: Map.get(instance, :tags, [])
    }

    GenServer.call(pid, {:register, String.downcase(service), id, instance}, @call_timeout)
  end

  @spec deregister(%__MODULE__{}, String.t(), term()) :: :ok
  def deregister(%__MODULE__{pid: pid}, service, id),
    do: GenServer.call(pid, {:deregister, String.downcase(service), id}, @call_timeout)

  @doc "Changes one of the `start!/1` options; queries read after this call see it."
  @spec set_option(%__MODULE__{}, atom(), term()) :: :ok
  def set_option(%__MODULE__{pid: pid}, key, value) when is_map_key(@defaults, key),
    do: GenServer.call(pid, {:set_option, key, value}, @call_timeout)

  @doc "The server as a `DYNAMIC_SRV_NAMESERVERS` entry."
  @spec nameserver(%__MODULE__{}) :: String.t()
  def nameserver(%__MODULE__{port: port}), do: "127.0.0.1:#{port}"

  @doc """
  Per `{qtype, transport}`: `queries`; `trimmed` (answers with fewer records than the catalog
  gave), `tc` (answers with TC set), `sent` and `built` (answer records sent, and before
  trimming, summed), and `answers`: `%{{sent, built} => count}`, to count trimmed answers.
  """
  @spec stats(%__MODULE__{}) :: %{{atom(), :udp | :tcp} => map()}
  def stats(%__MODULE__{pid: pid}), do: GenServer.call(pid, :stats, @call_timeout)

  @doc """
  The queries seen, oldest first (at least the last #{@log_limit}): maps with `transport`, `name`,
  `qtype`, `rcode`, `edns` (the advertised size or nil), `sent`, `built`, `trimmed`, `tc`.
  """
  @spec log(%__MODULE__{}) :: [map()]
  def log(%__MODULE__{pid: pid}), do: GenServer.call(pid, :log, @call_timeout)

  @spec stop(%__MODULE__{}) :: :ok
  def stop(%__MODULE__{pid: pid}) do
    if Process.alive?(pid), do: GenServer.stop(pid, :normal, 10_000)
    :ok
  catch
    :exit, _ -> :ok
  end

  # --- server ------------------------------------------------------------------------------

  @impl true
  def init(config) do
    Process.flag(:trap_exit, true)
    port = DynamicSrv.Test.Ports.free()
    ip = {127, 0, 0, 1}
    {:ok, udp} = :gen_udp.open(port, [:binary, ip: ip, active: true, recbuf: 1_000_000])

    # Consul's Go listener takes the kernel's somaxconn (4096); gen_tcp's default backlog
    # of 5 dropped connections when 100 nodes polled at once, and their polls failed.
    {:ok, listener} =
      :gen_tcp.listen(port, [
        :binary,
        ip: ip,
        active: false,
        reuseaddr: true,
        packet: 2,
        backlog: 4096
      ])

    view = :ets.new(:consul_dns_view, [:protected, read_concurrency: true])
    server = self()
    acceptor = spawn_link(fn -> accept_loop(listener, {server, view}) end)
    :ok = :gen_tcp.controlling_process(listener, acceptor)

    state = %{
      port: port,
      udp: udp,
      listener: listener,
      view: view,
      config: config,
      catalog: %{services: %{}, nodes: %{}},
      stats: %{},
      log: [],
      log_size: 0
    }

    {:ok, publish(state)}
  end

  # What the answering processes read: the catalog and options as of the last change.
  defp publish(state) do
    :ets.insert(state.view, {:view, state.catalog, state.config})
    state
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}
  def handle_call(:stats, _from, state), do: {:reply, state.stats, state}
  def handle_call(:log, _from, state), do: {:reply, Enum.reverse(state.log), state}

  def handle_call({:set_option, key, value}, _from, state),
    do: {:reply, :ok, publish(put_in(state.config[key], value))}

  def handle_call({:register, service, id, instance}, _from, %{catalog: catalog} = state) do
    node = %{address: instance.node_address, txt: Answer.meta_texts(instance.node_meta)}
    instances = catalog.services |> Map.get(service, %{}) |> Map.put(id, instance)

    catalog = %{
      services: Map.put(catalog.services, service, instances),
      nodes: Map.put(catalog.nodes, instance.node, node)
    }

    {:reply, :ok, publish(%{state | catalog: catalog})}
  end

  # The node stays in the catalog, as a Consul agent's node does when a service leaves it.
  def handle_call({:deregister, service, id}, _from, %{catalog: catalog} = state) do
    services =
      case Map.get(catalog.services, service, %{}) |> Map.delete(id) do
        empty when empty == %{} -> Map.delete(catalog.services, service)
        instances -> Map.put(catalog.services, service, instances)
      end

    {:reply, :ok, publish(put_in(state.catalog.services, services))}
  end

  @impl true
  def handle_cast({:answered, transport, query, info}, state),
    do: {:noreply, record(state, transport, query, info)}

  @impl true
  def handle_info({:udp, udp, ip, port, packet}, %{udp: udp} = state) do
    server = {self(), state.view}

    spawn(fn ->
      if reply = answer(packet, :udp, server), do: :gen_udp.send(udp, ip, port, reply)
    end)

    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    :gen_tcp.close(state.listener)
    :gen_udp.close(state.udp)
  end

  # Malformed packets get no answer, as a DNS server drops what it cannot parse. The
  # owner records the query before the reply is sent, so a stats/1 call made once the
  # reply arrived counts it.
  defp answer(packet, transport, {server, view}) do
    with {:ok, query} <- Wire.decode_query(packet) do
      [{:view, catalog, config}] = :ets.lookup(view, :view)
      {bytes, info} = Answer.reply(query, transport, catalog, config)
      GenServer.cast(server, {:answered, transport, query, info})
      bytes
    else
      :error -> nil
    end
  end

  defp record(state, transport, query, info) do
    key = {info.qtype, transport}
    zero = %{queries: 0, trimmed: 0, tc: 0, sent: 0, built: 0, answers: %{}}
    edns = if query.edns, do: query.udp_size

    s = Map.get(state.stats, key, zero)

    s = %{
      s
      | queries: s.queries + 1,
        trimmed: s.trimmed + if(info.trimmed, do: 1, else: 0),
        tc: s.tc + if(info.tc, do: 1, else: 0),
        sent: s.sent + info.sent,
        built: s.built + info.built,
        answers: Map.update(s.answers, {info.sent, info.built}, 1, &(&1 + 1))
    }

    entry = Map.merge(info, %{transport: transport, edns: edns})
    {log, size} = {[entry | state.log], state.log_size + 1}

    {log, size} =
      if size > 2 * @log_limit, do: {Enum.take(log, @log_limit), @log_limit}, else: {log, size}

    %{state | stats: Map.put(state.stats, key, s), log: log, log_size: size}
  end

  defp accept_loop(listener, server) do
    case :gen_tcp.accept(listener) do
      {:ok, socket} ->
        pid = spawn_link(fn -> receive(do: (:go -> serve_tcp(socket, server))) end)
        :ok = :gen_tcp.controlling_process(socket, pid)
        send(pid, :go)
        accept_loop(listener, server)

      # The listener closed (the server stopped): take the open connections down with us.
      {:error, _} ->
        exit(:shutdown)
    end
  end

  # Several queries per connection, as RFC 7766 allows and Consul (miekg/dns) serves.
  defp serve_tcp(socket, server) do
    with {:ok, packet} <- :gen_tcp.recv(socket, 0),
         bytes when is_binary(bytes) <- answer(packet, :tcp, server),
         :ok <- :gen_tcp.send(socket, bytes) do
      serve_tcp(socket, server)
    else
      _ -> :gen_tcp.close(socket)
    end
  end
end
