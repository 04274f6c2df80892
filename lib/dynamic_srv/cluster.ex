defmodule DynamicSrv.Cluster do
  @moduledoc """
  Keeps this node connected to the nodes a DNS SRV record lists. A plain supervisor child,
  for apps without libcluster (`Cluster.Strategy.DynamicSrv` is the same engine for libcluster).

      # Consul: each instance becomes app-<port>@<address> from the SRV answer
      children = [
        {DynamicSrv.Cluster,
         service: "my-app.service.consul", node_naming: {:basename_port_ip, "app"}}
      ]

  Options (the same keyword list the libcluster strategy takes as `config:`):

    * `:service` — required. The DNS name whose SRV records list the nodes. `:ignore` or
      `nil` disables the topology (one info line; nothing is started).
    * `:polling_interval` — ms between polls, default `5000`, plus up to 10% jitter. The
      first poll runs at start. A poll's DNS budget is this interval (at most 10 s) when it
      is longer than `DYNAMIC_SRV_LOOKUP_TIMEOUT_MS`, all of it for the SRV query (target
      addresses the answer lacks get a budget of their own): a late answer is still the
      newest membership, and nothing waits on a poll.
    * `:disconnect_on_deregister` — default `true`: nodes that left DNS leave the cluster
      (see below). A DNS *failure* never counts as leaving. `false`: nobody is disconnected,
      and a node that left keeps its links.
    * `:node_naming` — how an SRV target becomes a node name:
      * `:service_prefix` (default): target `node-a.my-app.service.consul` under service
        `my-app.service.consul` is `:"node-a@my-app.service.consul"`;
      * `{:basename_port, "app"}`: `app-PORT@target`, the SRV port (Caravan's convention;
        pairs with `DYNAMIC_SRV_PORT_MODE=name`);
      * `{:basename_port_ip, "app"}`: `app-PORT@IP`, the SRV port and the target's address
        (from the same answer, else an A/AAAA query), whatever the target is called: the
        convention for Consul, whose targets are `<hex-ip>.addr.<dc>.consul` or
        `<node>.node.<dc>.consul` (pairs with `DYNAMIC_SRV_PORT_MODE=name`);
      * `{:basename, "app"}`: `app@target`;
      * `{:basename_ip, "app"}`: query `:service` for A (or AAAA) records instead and connect
        to `app@IP`, as libcluster's DNSPoll and dns_cluster do.
    * `:ip_family` — `:inet` (default) or `:inet6`: which records `{:basename_ip, _}` asks for,
      and which address of a target `{:basename_port_ip, _}` uses.
    * `:nameservers` — e.g. `"127.0.0.1:8600"`; default `DYNAMIC_SRV_NAMESERVERS`, else the
      nameservers of OTP's inetrc, else `/etc/resolv.conf` (see `DynamicSrv.Nameservers`).
    * `:max_nodes` — at most this many members, default `1024`; more names are ignored with
      a warning.
    * `:dns_transport` — `:tcp` (default) or `:udp`: how the poll asks. Over TCP no server
      trims the answer to fit a packet; Consul trims UDP answers *without* setting the TC
      bit (24 instances no longer fit hickory's 1232-byte EDNS0 size), so over UDP some
      members are missing from every answer. With `:udp`, answers that look trimmed still
      never remove a member (see below). The epmd module's per-connection lookups use UDP.
    * `:removal_delay` — ms a node must be missing from complete answers before it counts
      as deregistered, default `10_000` (see below).
    * `:disconnect_grace` — ms a node that left DNS gets to leave the cluster by itself,
      from the poll at which this node removed it, before this node disconnects it; default
      three polling intervals (at most a day), which covers the polls by which two nodes
      with the same `:polling_interval` decide apart; `0` disconnects at once (see below).
    * `:max_node_atoms` — at most this many new node atoms per topology over the life of the
      VM, default `16 * max_nodes`, so hostile DNS cannot fill the atom table. The count
      survives restarts: a topology that crashes and is restarted, or is stopped and started
      again, goes on from what its earlier runs used up. A topology is known by its name: the
      libcluster topology name, or the `:topology` given to a plain child, else its
      `:service` (so plain children of one service without `:topology` share one budget).
    * `:resolver` — a 1-arity function called with the service name that returns
      `[{priority, weight, port, target_charlist}]` (or `{:error, reason}`), replacing DNS;
      for tests.

  ## Membership rules

    * A DNS failure (timeout, SERVFAIL, REFUSED, unreachable server, malformed or truncated
      answer) keeps the last good membership. One warning when the outage starts, one line
      when it ends.
    * A node is deregistered only after it is missing from **2 successive complete answers
      that list the same nodes** and has been missing for at least `:removal_delay` ms, so
      one sudden empty answer, a record that flaps, a short blip under fast polling, or a
      server rotating a subset under a record-count cap (Route 53 multivalue answers: 8)
      disconnects nobody.
    * An answer that may be partial never removes anyone: one with the TC bit, a UDP answer
      that fills its packet (1232 bytes with EDNS0, 512 without, or exactly 3 records
      without EDNS0, Consul's `udp_answer_limit`), a TCP answer at Consul's cap of 1024
      records, one with an SRV target whose address is missing. It still adds the nodes it
      lists. One warning names the server, what was seen and the fix (also for answers that
      keep rotating), again only after an answer above suspicion.
    * Every poll connects the members not currently connected, each in its own process, so
      an unreachable peer delays nobody; a node that dropped its connection is retried.
    * Every SRV answer fills the address cache `DynamicSrv.Epmd` answers from: connecting to
      a discovered peer costs no further DNS query.
    * One warning when a poll first finds this node unable to cluster (not distributed,
      short names, the stock epmd module, an epmd daemon started alongside), and one, repeated
      every 5 minutes, while DNS says the service does not exist or has no records.
    * A node that left DNS leaves the cluster by itself, through `:global.disconnect/0`
      (OTP 25.1+): a member that removes it tells its poller (a message to the same
      registered name: the `:name` given, else one derived from the topology), and it leaves
      at once if its own last complete answer lacked it too; so a lie told to one node alone
      disconnects nobody. It leaves every connection it has, as `:global.disconnect/0` does,
      and stops dialing until it is listed again. The members disconnect it themselves only
      if it is still on the same connection `:disconnect_grace` later (a node that does not
      run this poller, sees DNS differently, or has a custom `:disconnect` function); a new
      incarnation under the same name is never disconnected. Leaving this way keeps `global`
      (`prevent_overlapping_partitions`, OTP's default) from disconnecting healthy nodes from
      each other: a node the others drop one by one reports each loss, and `global` then
      drops the node that dropped it. `global` may still log one "requested disconnect from
      node ... in order to prevent overlapping partitions" about the departing node: harmless.
    * A member missing from the last complete answer is not dialed: it is on its way out,
      and may already have left.
    * Polls of a topology never overlap and are applied in the order they were asked for.
      One whose reply is late (a guard gives up after 60 s plus the polling interval and
      counts it as a failed poll) still finishes before the next one asks, and nothing it
      decided is lost: who left is worked out from the members this poller last acted on,
      so a node removed in a reply given up on is disconnected on the next poll.
  """
  use GenServer
  # Logger, prefixed with libcluster's "[libcluster:<topology>] " under the strategy.
  require DynamicSrv.Logger, as: Logger

  alias DynamicSrv.Cluster.{Departure, Misconfig, NodeAtoms, Options}
  alias DynamicSrv.Native

  @default_connect {:net_kernel, :connect_node, []}
  @default_disconnect {:erlang, :disconnect_node, []}
  @default_list_nodes {:erlang, :nodes, [:connected]}

  @doc false
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :topology, {__MODULE__, Keyword.get(opts, :service)}),
      start: {__MODULE__, :start_link, [opts]}
    }
  end

  @doc """
  Starts the poller. Besides the options above it takes `:name` (a GenServer name),
  `:topology` (a name for logs, default `:dynamic_srv`; also the child id and the key of the
  `:max_node_atoms` budget, both the service when it is not given), `:connect`,
  `:disconnect`, `:list_nodes` MFAs (the node is appended to `connect`/`disconnect` args), as
  libcluster passes them, and `:initial_members`: nodes (a list or MapSet) taken as members
  before the first poll, connected by it and removed by the membership rules below like any
  member.
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    {gen_opts, opts} = Keyword.split(opts, [:name])
    opts = Keyword.put(opts, :registered_name, gen_opts[:name])

    with :enabled <- Misconfig.disabled(opts),
         do: GenServer.start_link(__MODULE__, opts, gen_opts)
  end

  @doc "The current members, as node atoms."
  @spec members(GenServer.server()) :: [node()]
  def members(server), do: GenServer.call(server, :members)

  @doc "Polls now instead of waiting for the timer; returns once the poll has been applied."
  @spec poll_now(GenServer.server(), timeout()) :: :ok
  def poll_now(server, timeout \\ 30_000), do: GenServer.call(server, :poll_now, timeout)

  @impl true
  def init(opts) do
    {engine_opts, config} =
      Keyword.split(opts, [
        :topology,
        :connect,
        :disconnect,
        :list_nodes,
        :libcluster,
        :initial_members,
        :log_prefix,
        :registered_name
      ])

    options = Options.validate!(config)

    with :ok <- Native.load(),
         :ok <- DynamicSrv.LogForwarder.ensure_started(),
         {:ok, topology} <-
           Native.topology_new(DynamicSrv.Nameservers.environment(), native_options(options)) do
      state = %{
        options: options,
        topology: Keyword.get(engine_opts, :topology, :dynamic_srv),
        departure:
          Departure.init(budget_key(engine_opts, options), engine_opts[:registered_name]),
        connect: Keyword.get(engine_opts, :connect, @default_connect),
        disconnect: Keyword.get(engine_opts, :disconnect, @default_disconnect),
        list_nodes: Keyword.get(engine_opts, :list_nodes, @default_list_nodes),
        libcluster?: Keyword.get(engine_opts, :libcluster, false),
        native: topology,
        members: [],
        member_names: [],
        atoms: NodeAtoms.new(budget_key(engine_opts, options), options.max_node_atoms),
        atom_warning_given: false,
        over_limit_warned?: false,
        misconfig: Misconfig.new(),
        deregistered?: false,
        self_absent?: false,
        connecting: MapSet.new(),
        poll_tag: nil,
        resolver_worker: nil,
        waiting: [],
        timer: nil
      }

      Logger.metadata(topology: state.topology)

      if Keyword.get(engine_opts, :log_prefix),
        do: DynamicSrv.Logger.put_libcluster_topology(state.topology)

      state = DynamicSrv.Cluster.Seed.apply(state, engine_opts[:initial_members])
      {:ok, start_poll(state)}
    else
      {:error, message} -> {:stop, {:invalid_config, message}}
    end
  end

  # What "per topology" means for the atom budget: the libcluster topology name, or the
  # `:topology` given to a plain child, else its service. The same key on every start, so a
  # restart finds the budget its predecessors used up.
  defp budget_key(engine_opts, options),
    do: Keyword.get(engine_opts, :topology) || options.service

  defp native_options(options) do
    {naming, basename} =
      case options.node_naming do
        :service_prefix -> {:service_prefix, nil}
        {kind, base} -> {kind, base}
      end

    {options.service, naming, basename, options.ip_family, options.max_nodes, options.nameservers,
     {options.dns_transport, options.removal_delay, options.polling_interval}}
  end

  @impl true
  def handle_call(:members, _from, state), do: {:reply, state.members, state}

  def handle_call(:poll_now, from, state) do
    state = %{state | waiting: [from | state.waiting]}
    {:noreply, if(state.poll_tag, do: state, else: start_poll(cancel_timer(state)))}
  end

  @impl true
  def handle_info(:poll, %{poll_tag: nil} = state),
    do: {:noreply, start_poll(%{state | timer: nil})}

  # The timer fired as poll_now started a poll: that poll stands in for this one (polls never
  # overlap, so answers are applied in the order they were asked for).
  def handle_info(:poll, state), do: {:noreply, %{state | timer: nil}}

  def handle_info({tag, poll}, %{poll_tag: tag} = state) when is_map(poll) do
    # Who left is what this process last acted on minus the topology's members now, not the
    # poll's own `left`: a reply we gave up on (the guard fired first) was applied to the
    # topology all the same, and its leavers would otherwise never be disconnected.
    left = removed(state.member_names, poll.members)
    joined = removed(poll.members, state.member_names)
    state = apply_poll(poll, left, %{state | poll_tag: nil})
    change = %{joined: length(joined), left: length(left)}
    state = DynamicSrv.Telemetry.poll_applied(poll, change, state)

    Enum.each(state.waiting, &GenServer.reply(&1, :ok))
    {:noreply, schedule_poll(%{state | waiting: []})}
  end

  # A poll we gave up on that finished after all. Its membership is already in the topology
  # and the next poll's member list carries it; its events (an outage ending, a warning)
  # happened once and are logged once, here.
  def handle_info({tag, poll}, state) when is_reference(tag) and is_map(poll) do
    log_events(poll, state)
    {:noreply, state}
  end

  def handle_info({:poll_timeout, tag}, %{poll_tag: tag} = state) do
    poll = Native.topology_fail(state.native, "no answer from the DNS thread")
    handle_info({tag, poll}, state)
  end

  def handle_info({:connected, node, result}, state) do
    # Through libcluster, its Cluster.Strategy.connect_nodes/4 has logged the failure.
    if result != true and result != :ok and not state.libcluster? do
      Logger.debug("could not connect to #{node}: #{inspect(result)}")
    end

    {:noreply, %{state | connecting: MapSet.delete(state.connecting, node)}}
  end

  def handle_info({:departed, grace}, state) when is_reference(grace),
    do: {:noreply, disconnect_departed(state, grace)}

  def handle_info({:nodedown, node, _info}, state) when is_atom(node),
    do: {:noreply, %{state | departure: Departure.nodedown(state.departure, node)}}

  # A member found this node gone from the service (any connected node may send anything
  # to the registered name: only this shape counts).
  def handle_info({:dynamic_srv_left, service, from}, state)
      when is_binary(service) and is_atom(from) do
    if same_service?(service, state.options.service),
      do: {:noreply, confirmed(state, from)},
      else: {:noreply, state}
  end

  # Timers of finished polls, connector exits.
  def handle_info(_stale, state), do: {:noreply, state}

  defp start_poll(state) do
    tag = make_ref()

    worker =
      case state.options.resolver do
        nil ->
          with {:error, reason} <- Native.topology_poll(state.native, self(), tag) do
            send(
              self(),
              {tag, Native.topology_fail(state.native, "lookup not started: #{reason}")}
            )
          end

          nil

        resolver ->
          run_resolver(resolver, state, self(), tag)
      end

    # The DNS thread bounds every lookup itself; this only guards against a lost reply.
    Process.send_after(self(), {:poll_timeout, tag}, 60_000 + state.options.polling_interval)
    DynamicSrv.Telemetry.poll_started(%{state | poll_tag: tag, resolver_worker: worker})
  end

  # Like the DNS thread, which runs a topology's polls one at a time: a poll given up on (the
  # guard fired first) finishes before the next one asks, so an old answer can never be
  # applied over a newer one.
  defp run_resolver(
         resolver,
         %{options: %{service: service}, native: native} = state,
         reply_to,
         tag
       ) do
    previous = state.resolver_worker

    spawn(fn ->
      if previous do
        ref = Process.monitor(previous)
        receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
      end

      poll =
        try do
          case resolver.(String.to_charlist(service)) do
            records when is_list(records) ->
              Native.topology_apply(native, Enum.map(records, &record/1))

            other ->
              Native.topology_fail(native, "resolver returned #{inspect(other)}")
          end
        catch
          kind, reason ->
            Native.topology_fail(
              native,
              "resolver raised #{Exception.format_banner(kind, reason)}"
            )
        end

      send(reply_to, {tag, poll})
    end)
  end

  defp record({priority, weight, port, target}),
    do: {priority, weight, port, to_string(target)}

  defp apply_poll(poll, left, state) do
    log_events(poll, state)
    log_left(left, state)
    {misconfig, lines} = Misconfig.check(state.misconfig, poll, state.options)
    Enum.each(lines, fn {level, line} -> Logger.log(level, line) end)
    state = %{state | misconfig: misconfig}
    {members, atoms, refused} = NodeAtoms.to_atoms(state.atoms, poll.members)
    state = warn_atoms_exhausted(%{state | atoms: atoms}, refused)
    # A failed poll says nothing about the answer's size: the warning state stands.
    state = if poll.failed, do: state, else: warn_over_limit(state, poll.over_limit)
    member? = me?(poll.members)
    leaving? = me?(poll.leaving)
    deregistered? = deregistered?(member?, left, state)

    # Its own complete answer lists it: earlier confirmations no longer stand, and it dials.
    listed? = not poll.failed and member? and not leaving?
    state = if listed?, do: %{state | departure: Departure.listed(state.departure)}, else: state

    if deregistered? and not state.deregistered? do
      Logger.info(
        "this node left #{state.options.service} in DNS; " <>
          if(state.options.disconnect_on_deregister,
            do: "not connecting to its members until it is listed again",
            else: "disconnect_on_deregister is false, so it stays connected"
          )
      )
    end

    state = %{
      state
      | members: members,
        member_names: poll.members,
        deregistered?: deregistered?,
        self_absent?: deregistered? or leaving?
    }

    state =
      if state.options.disconnect_on_deregister do
        gone = left |> Enum.flat_map(&existing_atom/1) |> Enum.reject(&(&1 == node()))
        state |> depart(gone) |> leave()
      else
        state
      end

    # A node that left DNS stops dialing, or it would undo the others' disconnect on its
    # next poll. A node not yet listed (registration still in flight) dials as usual.
    if (state.deregistered? or state.departure.left?) and state.options.disconnect_on_deregister,
      do: state,
      else: connect(dialable(members, poll), state)
  end

  # Members a complete answer lacked are on their way out: dialing one that already left
  # the cluster by itself would only bring it back until this node drops it too.
  defp dialable(members, %{leaving: []}), do: members

  defp dialable(members, %{leaving: leaving}) do
    leaving = MapSet.new(leaving)
    Enum.reject(members, &MapSet.member?(leaving, Atom.to_string(&1)))
  end

  # Nodes that left DNS are told so, and get `disconnect_grace` to leave the cluster by
  # themselves (see Departure); those still on the same connection then are disconnected.
  defp depart(state, []), do: state

  defp depart(state, gone) do
    {departure, grace} =
      Departure.others_left(state.departure, gone, state.options.service, list_nodes(state))

    state = %{state | departure: departure}

    case state.options.disconnect_grace do
      0 -> disconnect_departed(state, grace)
      ms -> tap(state, fn _ -> Process.send_after(self(), {:departed, grace}, ms) end)
    end
  end

  defp disconnect_departed(state, grace) do
    {departure, due} = Departure.due(state.departure, grace)
    listed = MapSet.new(state.members)
    disconnect(Enum.reject(due, &MapSet.member?(listed, &1)), state)
    %{state | departure: departure}
  end

  # This node, once its own last complete answer lacked it and a member found it gone too.
  defp leave(%{self_absent?: false} = state), do: state

  defp leave(state) do
    {departure, line} = Departure.maybe_leave(state.departure, state.disconnect)
    if line, do: Logger.info(line)
    %{state | departure: departure}
  end

  defp confirmed(state, from) do
    state = %{state | departure: Departure.confirmed(state.departure, from)}
    if state.options.disconnect_on_deregister, do: leave(state), else: state
  end

  # Configs may spell the service with another case or a trailing dot.
  defp same_service?(a, b), do: normalize(a) == normalize(b)
  defp normalize(service), do: service |> String.downcase() |> String.trim_trailing(".")

  defp removed(before, now) do
    now = MapSet.new(now)
    Enum.reject(before, &MapSet.member?(now, &1))
  end

  defp me?(names) do
    me = node() |> Atom.to_string() |> String.downcase()
    Enum.any?(names, &(String.downcase(&1) == me))
  end

  defp deregistered?(member?, left, state) do
    cond do
      member? ->
        state.deregistered? &&
          Logger.info("this node is listed in #{state.options.service} again")

        false

      me?(left) ->
        true

      true ->
        state.deregistered?
    end
  end

  defp existing_atom(name) do
    case NodeAtoms.existing(name) do
      {:ok, atom} -> [atom]
      :error -> []
    end
  end

  defp log_events(poll, state) do
    service = state.options.service

    if reason = poll.outage_started do
      Logger.warning(
        "DNS lookup of #{service} failed: #{reason}; keeping the last membership " <>
          "(#{Departure.count(poll.members, "node")}) until DNS answers again"
      )
    end

    if failed = poll.outage_ended do
      Logger.info(
        "DNS lookup of #{service} answers again after #{Departure.count(failed, "failed poll")}"
      )
    end

    if warning = poll.partial_warning do
      Logger.warning(warning)
    end

    for {target, reason} <- poll.unmapped do
      Logger.debug("ignoring SRV target #{target} of #{service}: #{reason}")
    end
  end

  defp log_left([], _state), do: :ok

  defp log_left(left, state),
    do:
      Logger.info(
        "#{Departure.count(left, "node")} left #{state.options.service} in DNS: #{sample(left)}"
      )

  defp sample(names) when length(names) <= 10, do: Enum.join(names, ", ")
  defp sample(names), do: Enum.join(Enum.take(names, 10), ", ") <> ", ..."

  # Once while answers list too many nodes, not on every poll; again after one that does not.
  defp warn_over_limit(state, 0), do: %{state | over_limit_warned?: false}
  defp warn_over_limit(%{over_limit_warned?: true} = state, _over), do: state

  defp warn_over_limit(state, over) do
    Logger.warning(
      "#{state.options.service} lists #{over} nodes beyond max_nodes=" <>
        "#{state.options.max_nodes}; ignoring them while it does"
    )

    %{state | over_limit_warned?: true}
  end

  defp warn_atoms_exhausted(state, 0), do: state
  defp warn_atoms_exhausted(%{atom_warning_given: true} = state, _refused), do: state

  defp warn_atoms_exhausted(state, refused) do
    Logger.warning(
      "ignoring #{refused} new node names from #{state.options.service}: max_node_atoms=" <>
        "#{state.options.max_node_atoms} new atoms already created by this topology since " <>
        "the VM started; raise it if this is expected"
    )

    %{state | atom_warning_given: true}
  end

  defp connect(members, state) do
    connected = MapSet.new(list_nodes(state))
    me = node()

    targets =
      Enum.reject(members, fn node ->
        node == me or MapSet.member?(connected, node) or MapSet.member?(state.connecting, node)
      end)

    server = self()

    for node <- targets do
      spawn(fn -> send(server, {:connected, node, try_connect(node, state)}) end)
    end

    %{state | connecting: Enum.into(targets, state.connecting)}
  end

  # A connect MFA that raises must still report back: a node left in `connecting` would never
  # be dialed again.
  defp try_connect(node, state) do
    connect_one(node, state)
  catch
    kind, reason -> {:error, {kind, reason}}
  end

  defp connect_one(node, %{libcluster?: true} = state) do
    # Through libcluster, so its logging and telemetry still happen.
    apply(Cluster.Strategy, :connect_nodes, [
      state.topology,
      state.connect,
      state.list_nodes,
      [node]
    ])
  end

  defp connect_one(node, %{connect: {m, f, a}}), do: apply(m, f, a ++ [node])

  defp disconnect([], _state), do: :ok

  defp disconnect(nodes, %{libcluster?: true} = state) do
    apply(Cluster.Strategy, :disconnect_nodes, [
      state.topology,
      state.disconnect,
      state.list_nodes,
      nodes
    ])
  end

  defp disconnect(nodes, %{disconnect: {m, f, a}} = state) do
    connected = MapSet.new(list_nodes(state))

    for node <- nodes, MapSet.member?(connected, node) do
      apply(m, f, a ++ [node])
    end

    :ok
  end

  defp list_nodes(%{list_nodes: {m, f, a}}), do: apply(m, f, a)

  defp schedule_poll(state) do
    interval = state.options.polling_interval
    jitter = :rand.uniform(div(interval, 10) + 1) - 1
    %{state | timer: Process.send_after(self(), :poll, interval + jitter)}
  end

  defp cancel_timer(%{timer: nil} = state), do: state

  defp cancel_timer(state) do
    Process.cancel_timer(state.timer)
    %{state | timer: nil}
  end
end
