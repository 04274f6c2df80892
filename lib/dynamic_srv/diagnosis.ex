defmodule DynamicSrv.Diagnosis do
  @moduledoc """
  Collects and words what `DynamicSrv.diagnose/1` and `mix dynamic_srv.doctor` print.

      # on a running release (prints on your terminal)
      bin/my_app rpc "DynamicSrv.diagnose()"
      # before starting it, with the same environment
      mix dynamic_srv.doctor --node a@my-app.service.consul --service my-app.service.consul

  `run/1` gathers a report: the configuration with the source of each value, this node's
  name, port and mode, what DNS answers (each answer timed) for this node, the services
  `DynamicSrv.Cluster` polls and every peer, the address cache, and every problem with its
  likely fix. `format/1` turns it into plain lines. DNS queries run on the library's DNS
  thread with a private cache: a diagnosis never changes what the node answers from.
  """

  alias DynamicSrv.{Epmd, LogForwarder, Nameservers, Native}
  alias DynamicSrv.Diagnosis.Configured

  @max_peers 20
  @max_cache_entries 50

  @typedoc "What `run/1` returns; `format/1` words it."
  @type report :: %{
          settings: [map()],
          node: map(),
          nameservers: String.t() | nil,
          self_check: map() | nil,
          services: [map()],
          peers: [map()],
          peers_not_checked: non_neg_integer(),
          cache: map(),
          log: map(),
          problems: [%{what: String.t(), fix: String.t()}]
        }

  @doc """
  Gathers the report. Options:

    * `:node` — the node name to diagnose as (default `node()`; for `mix dynamic_srv.doctor`
      on a machine where the node is not running).
    * `:services` — SRV names to query, besides those of running `DynamicSrv.Cluster`s.
    * `:peers` — more node names to look up, besides connected nodes and cluster members.
    * `:nameservers` — override `DYNAMIC_SRV_NAMESERVERS` for this diagnosis.
    * `:naming` — the `node_naming` to read the answers of `:services` with (default
      `:service_prefix`); configured and running clusters use their own.
    * `:topologies` — whether to check the clusters the application configures (libcluster
      topologies using `Cluster.Strategy.DynamicSrv` and `{DynamicSrv.Cluster, opts}` kept
      in config; default `true`), or the list of applications whose config to read.
    * `:family` — `:inet` or `:inet6` (default: from `-proto_dist`).
    * `:env` — the environment variables as a map (default: this OS process's).
  """
  @spec run(keyword()) :: report()
  def run(opts \\ []) do
    case Native.load() do
      :ok ->
        LogForwarder.ensure_started()
        collect(opts)

      {:error, message} ->
        %{empty_report() | problems: [%{what: message, fix: "run `mix compile` (needs cargo)"}]}
    end
  end

  defp empty_report do
    %{
      settings: [],
      node: %{},
      nameservers: nil,
      self_check: nil,
      services: [],
      peers: [],
      peers_not_checked: 0,
      cache: %{entries: [], total: 0, dns_failed_ago_ms: nil},
      log: %{},
      problems: []
    }
  end

  defp collect(opts) do
    env = Keyword.get_lazy(opts, :env, &Native.environment/0)
    nameservers_source = Nameservers.source(Keyword.get(opts, :nameservers), env)
    settings = env |> Native.config_settings() |> Nameservers.note_setting(nameservers_source)
    me = to_string(Keyword.get(opts, :node, node()))
    family = Keyword.get_lazy(opts, :family, &dist_family/0)
    this = this_node(me, env, family)

    own = if this.distributed?, do: me, else: nil

    diagnoser =
      Native.diagnoser_new(Nameservers.environment(env), Keyword.get(opts, :nameservers), own)

    clusters = running_clusters()
    {configured, config_problems} = configured_clusters(opts, clusters)

    {nameservers, self_check, services, peers, skipped, dns_problems} =
      case diagnoser do
        {:ok, diagnoser} ->
          info = Native.diagnoser_info(diagnoser)
          self_check = check_self(diagnoser, this, family)
          services = check_services(diagnoser, env, clusters, configured, opts)
          listed = Enum.flat_map(services, &List.wrap(&1.dns_members))
          {peers, skipped} = check_peers(diagnoser, me, clusters, listed, opts, family, info)
          {info.nameservers, self_check, services, peers, skipped, []}

        {:error, message} ->
          {nil, nil, [], [], 0, [nameservers_problem(message, env, opts)]}
      end

    report = %{
      settings: settings,
      node:
        Map.merge(this, %{
          nameservers_override: Keyword.get(opts, :nameservers),
          nameservers_source: nameservers_source
        }),
      nameservers: nameservers,
      self_check: self_check,
      services: services,
      peers: peers,
      peers_not_checked: skipped,
      cache: Native.cache_snapshot(@max_cache_entries),
      log: Native.log_stats(),
      problems: []
    }

    listed_aliases = listed_aliases(report)
    report = mark_aliases(report, listed_aliases)

    %{
      report
      | problems:
          uniq(
            setting_problems(settings, this) ++
              config_problems ++
              vm_problems(vm_facts()) ++
              node_problems(this) ++
              dns_problems ++
              service_name_problems(opts) ++
              nothing_checked(report, diagnoser) ++
              probe_problems(report) ++ membership_problems(report, listed_aliases)
          )
    }
  end

  defp uniq(problems), do: Enum.uniq_by(problems, & &1.what)

  # --- this node ---------------------------------------------------------------------------

  defp this_node(me, env, family) do
    distributed? = me != "nonode@nohost"
    registered = registered_port(me)
    expected = expected_port(me, env)

    %{
      name: me,
      distributed?: distributed?,
      running?: Node.alive?() and to_string(node()) == me,
      epmd_module: if(Node.alive?(), do: :net_kernel.epmd_module(), else: nil),
      family: family,
      mode: Map.get(env, "DYNAMIC_SRV_PORT_MODE", "srv") |> String.downcase(),
      listen_port: registered || expected,
      port_registered?: registered != nil
    }
  end

  defp registered_port(me) do
    case Epmd.names() do
      {:ok, [{name, port}]} ->
        if String.starts_with?(me, "#{name}@"), do: port, else: nil

      _ ->
        nil
    end
  end

  # The port this node would listen on with this environment, when it is not running.
  defp expected_port("nonode@nohost", _env), do: nil

  defp expected_port(me, env) do
    with {:ok, engine} <- Native.configure(env),
         {:ok, port} <- Native.listen_port(engine, me) do
      port
    else
      _ -> nil
    end
  end

  defp dist_family do
    case :init.get_argument(:proto_dist) do
      {:ok, [[proto | _] | _]} -> if List.starts_with?(proto, ~c"inet6"), do: :inet6, else: :inet
      _ -> :inet
    end
  end

  defp check_self(_diagnoser, %{distributed?: false}, _family), do: nil

  defp check_self(diagnoser, this, family) do
    port = if this.listen_port && this.listen_port > 0, do: this.listen_port, else: nil

    check = await_node(diagnoser, this.name, family, port)
    Map.put(check, :local_address?, local_address?(check.endpoint))
  end

  # Whether an "ip:port" from DNS is an address of this host; nil when unknown.
  defp local_address?(nil), do: nil

  defp local_address?(endpoint) do
    with ip when ip != nil <- endpoint_ip(endpoint),
         {:ok, interfaces} <- :inet.getifaddrs() do
      match?({127, _, _, _}, ip) or
        Enum.any?(interfaces, fn {_name, opts} -> {:addr, ip} in opts end)
    else
      _ -> nil
    end
  end

  # --- services ----------------------------------------------------------------------------

  # DynamicSrv.Cluster processes found by their initial call; their state says which service
  # they poll, with which nameservers, and what the members are.
  defp running_clusters do
    for pid <- Process.list(),
        {:dictionary, dict} <- [Process.info(pid, :dictionary)],
        dict[:"$initial_call"] == {DynamicSrv.Cluster, :init, 1},
        state = cluster_state(pid),
        state != nil,
        do: state
  end

  defp cluster_state(pid) do
    state = :sys.get_state(pid, 1_000)

    %{
      service: state.options.service,
      nameservers: state.options.nameservers,
      naming: state.options.node_naming,
      ip_family: state.options.ip_family,
      dns_transport: state.options.dns_transport,
      members: Enum.map(state.members, &Atom.to_string/1)
    }
  catch
    _, _ -> nil
  end

  # The application's configured clusters that are not running here (those that run are
  # checked with their live state).
  defp configured_clusters(opts, running) do
    case Keyword.get(opts, :topologies, true) do
      false ->
        {[], []}

      apps ->
        {found, problems} = Configured.find(if is_list(apps), do: apps, else: nil)
        running = Enum.map(running, & &1.service)
        {Enum.reject(found, &(&1.service in running)), problems}
    end
  end

  defp check_services(diagnoser, env, clusters, configured, opts) do
    from_clusters =
      for cluster <- clusters do
        d =
          case cluster.nameservers do
            nil -> {:ok, diagnoser}
            list -> Native.diagnoser_new(env, list, nil)
          end

        Map.merge(
          %{
            service: cluster.service,
            source:
              "polled by DynamicSrv.Cluster over #{cluster.dns_transport |> to_string() |> String.upcase()}",
            members: cluster.members,
            dns_transport: cluster.dns_transport,
            naming: cluster.naming
          },
          members_probe(d, cluster.naming, cluster.ip_family, cluster.service)
        )
      end

    from_config =
      for cluster <- configured do
        d =
          case cluster.nameservers do
            nil -> {:ok, diagnoser}
            list -> Native.diagnoser_new(env, list, nil)
          end

        Map.merge(
          %{
            service: cluster.service,
            source: "configured in #{cluster.source}, not running here",
            members: nil,
            dns_transport: cluster.dns_transport,
            naming: cluster.naming
          },
          members_probe(d, cluster.naming, cluster.ip_family, cluster.service)
        )
      end

    known = Enum.map(clusters ++ configured, & &1.service)
    naming = Keyword.get(opts, :naming, :service_prefix)

    asked =
      for service <- Enum.uniq(List.wrap(Keyword.get(opts, :services, []))),
          service not in known,
          dns_name?(service) do
        Map.merge(
          %{service: service, source: "asked for", members: nil, naming: naming},
          members_probe({:ok, diagnoser}, naming, :inet, service)
        )
      end

    from_clusters ++ from_config ++ asked
  end

  # What a poll of the service would list now: the timed answer and the node names the
  # cluster's naming gives it (nil when the lookup failed).
  defp members_probe({:ok, diagnoser}, naming, family, service) do
    tag = make_ref()

    native_naming =
      case naming do
        :service_prefix -> {:service_prefix, nil}
        {kind, base} -> {kind, base}
      end

    :ok = Native.diagnose_members(diagnoser, service, native_naming, family, self(), tag)

    case await(tag, Native.diagnoser_info(diagnoser).lookup_timeout_ms, fn -> nil end) do
      %{probe: probe, members: members} -> %{probe: probe, dns_members: members}
      nil -> %{probe: lost(service), dns_members: nil}
    end
  end

  defp members_probe(error, naming, _family, service) do
    kind = if match?({:basename_ip, _}, naming), do: :a, else: :srv
    %{probe: unusable_nameservers(error, kind, service), dns_members: nil}
  end

  defp unusable_nameservers({:error, message}, kind, name) do
    %{
      name: name,
      record_type: kind |> Atom.to_string() |> String.upcase(),
      elapsed_us: 0,
      answers: [],
      failure: %{reason: "invalid_config", message: message, fix: "fix the cluster's nameservers"}
    }
  end

  defp lost(name) do
    %{
      name: name,
      record_type: "?",
      elapsed_us: 0,
      answers: [],
      failure: %{
        reason: "no_reply",
        message: "no reply from the DNS thread",
        fix: "the DNS thread is stuck or overloaded; check the node's CPU"
      }
    }
  end

  # --- peers -------------------------------------------------------------------------------

  defp check_peers(diagnoser, me, clusters, listed, opts, family, info) do
    connected = Enum.map(Node.list(), &Atom.to_string/1)
    members = Enum.uniq(Enum.flat_map(clusters, & &1.members) ++ listed)
    asked = Enum.map(List.wrap(Keyword.get(opts, :peers, [])), &to_string/1)
    all = Enum.uniq(asked ++ connected ++ members) -- [me]
    {checked, rest} = Enum.split(all, @max_peers)

    # All at once: the DNS thread runs them concurrently, so one dead peer costs one timeout.
    tags =
      for peer <- checked do
        tag = make_ref()
        :ok = Native.diagnose_node(diagnoser, peer, family, nil, self(), tag)
        {peer, tag}
      end

    peers =
      for {peer, tag} <- tags do
        check = await(tag, info.lookup_timeout_ms, fn -> lost_node(peer) end)

        Map.merge(check, %{
          connected?: peer in connected,
          member?: peer in members
        })
      end

    {peers, length(rest)}
  end

  defp await_node(diagnoser, node, family, listen_port) do
    tag = make_ref()
    :ok = Native.diagnose_node(diagnoser, node, family, listen_port, self(), tag)
    await(tag, Native.diagnoser_info(diagnoser).lookup_timeout_ms, fn -> lost_node(node) end)
  end

  defp lost_node(node) do
    %{node: node, how: "?", probes: [lost(node)], endpoint: nil, problems: []}
  end

  # A node check makes up to two bounded queries. A probe that crashed on the DNS thread
  # replies `{:error, :internal_error, _}`: shown like one that never answered.
  defp await(tag, timeout_ms, on_timeout) do
    receive do
      {^tag, %{} = result} -> result
      {^tag, {:error, :internal_error, _message}} -> on_timeout.()
    after
      2 * timeout_ms + 2_000 -> on_timeout.()
    end
  end

  # --- problems ----------------------------------------------------------------------------

  # A missing ERL_DIST_PORT matters only to a node: checking services alone (no `--node`, not
  # distributed) needs no port.
  defp setting_problems(settings, this) do
    for %{error: error, variable: var} <- settings,
        error != nil,
        this.distributed? or not (var == "ERL_DIST_PORT" and error =~ "is not set") do
      %{what: error, fix: setting_fix(var, error)}
    end
  end

  # The nameservers cannot be used at all: nothing was asked.
  defp nameservers_problem(message, env, opts) do
    {given, where} =
      case Keyword.get(opts, :nameservers) do
        nil -> {Map.get(env, "DYNAMIC_SRV_NAMESERVERS", ""), :env}
        list -> {list, Keyword.get(opts, :nameservers_source, "the nameservers: option")}
      end

    message =
      if where == :env,
        do: message,
        else: String.replace(message, ~r/^DYNAMIC_SRV_NAMESERVERS=/, "#{where} ")

    suggestion = suggest_nameservers(given)

    fix =
      case where do
        :env -> "set DYNAMIC_SRV_NAMESERVERS=#{suggestion}"
        "--nameservers" -> "run with --nameservers #{suggestion}"
        other -> "give #{other} #{inspect(suggestion)}"
      end

    %{
      what: "cannot query DNS: #{message}",
      fix: fix <> " (an IP address and port per server, comma-separated; IPv6 as [::1]:53)"
    }
  end

  # "localhost:8600" -> "127.0.0.1:8600"; anything else unusable -> the Consul agent's address.
  defp suggest_nameservers(given) do
    given
    |> String.split(",", trim: true)
    |> Enum.map(fn server ->
      server = String.trim(server)

      case Regex.run(~r/^(?:localhost|ip6-localhost)(?::(\d+))?$/i, server) do
        [_] -> "127.0.0.1:53"
        [_, port] -> "127.0.0.1:#{port}"
        nil -> if server =~ ~r/^[\d.]+:\d+$|^\[[\h:]+\]:\d+$/, do: server, else: nil
      end
    end)
    |> Enum.reject(&is_nil/1)
    |> case do
      [] -> "127.0.0.1:8600"
      list -> Enum.join(list, ",")
    end
  end

  defp setting_fix("ERL_DIST_PORT", error) do
    if error =~ "is not set" do
      "set ERL_DIST_PORT to the port this node listens on (Nomad: ERL_DIST_PORT=${NOMAD_PORT_dist}), " <>
        "or use DYNAMIC_SRV_PORT_MODE=name with names like app-4370@host"
    else
      "set ERL_DIST_PORT to an integer from 1 to 65535"
    end
  end

  defp setting_fix(var, _error),
    do: "correct #{var} as the message says, or unset it to use the default"

  defp node_problems(%{distributed?: true, running?: true, epmd_module: module} = _this)
       when module != Epmd do
    [
      %{
        what: "this node does not use DynamicSrv.Epmd (its epmd module is #{inspect(module)})",
        fix:
          "start the VM with -start_epmd false -epmd_module Elixir.DynamicSrv.Epmd " <>
            "(e.g. in ELIXIR_ERL_OPTIONS or rel/vm.args.eex)"
      }
    ]
  end

  defp node_problems(_this), do: []

  @doc false
  # How this VM was told to use an epmd module, for vm_problems/1.
  @spec vm_facts() :: map()
  def vm_facts do
    %{
      otp: String.to_integer(System.otp_release()),
      flag: argument(:epmd_module),
      kernel_parameter: Application.get_env(:kernel, :epmd_module),
      start_epmd: argument(:start_epmd),
      named_at_boot?: argument(:name) != nil or argument(:sname) != nil
    }
  end

  defp argument(flag) do
    case :init.get_argument(flag) do
      {:ok, values} -> values |> List.last() |> List.last() |> to_string()
      :error -> nil
    end
  end

  @doc false
  # Misconfigurations of the VM flags that select the epmd module: the kernel parameter on an
  # OTP that ignores it, both forms at once (OTP 27+ refuses), an epmd daemon started anyway.
  @spec vm_problems(map()) :: [%{what: String.t(), fix: String.t()}]
  def vm_problems(facts) do
    ours_by_flag? = facts.flag == "Elixir.DynamicSrv.Epmd"
    # Without the inner quotes OTP 25 keeps the value as a charlist (27+ refuse to boot).
    ours_by_parameter? = facts.kernel_parameter in [Epmd, ~c"Elixir.DynamicSrv.Epmd"]

    ignored_parameter =
      if ours_by_parameter? and facts.otp < 27 and facts.flag == nil do
        [
          %{
            what:
              "the kernel parameter epmd_module names DynamicSrv.Epmd, but OTP #{facts.otp} " <>
                "ignores it (OTP 27+ read it): this VM uses stock epmd",
            fix: "start the VM with -epmd_module Elixir.DynamicSrv.Epmd instead"
          }
        ]
      else
        []
      end

    both =
      if facts.flag != nil and facts.kernel_parameter != nil and facts.otp >= 27 do
        [
          %{
            what:
              "both the -epmd_module flag and the kernel parameter epmd_module are given: " <>
                "OTP #{facts.otp} refuses to start distribution with both (invalid_configuration)",
            fix:
              "keep one: -kernel epmd_module \"'Elixir.DynamicSrv.Epmd'\" (OTP 27+) or " <>
                "-epmd_module Elixir.DynamicSrv.Epmd"
          }
        ]
      else
        []
      end

    ours? = ours_by_flag? or (ours_by_parameter? and facts.otp >= 27)

    daemon =
      if ours? and facts.named_at_boot? and facts.start_epmd != "false" do
        [
          %{
            what:
              "the VM was started without -start_epmd false, so it started an epmd daemon " <>
                "(or tried to), which DynamicSrv.Epmd never uses",
            fix: "add -start_epmd false next to the epmd module setting"
          }
        ]
      else
        []
      end

    ignored_parameter ++ both ++ daemon
  end

  # A name that cannot be asked is the caller's mistake, not the DNS server's.
  defp service_name_problems(opts) do
    for service <- List.wrap(Keyword.get(opts, :services, [])), not dns_name?(service) do
      %{
        what: "--service #{inspect(service)} is not a DNS name, so it was not asked",
        fix:
          "give the SRV name the topology polls, e.g. --service my-app.service.consul " <>
            "(labels of letters, digits, '-' and '_', separated by dots)"
      }
    end
  end

  defp dns_name?(name) when is_binary(name) and byte_size(name) in 1..253 do
    name
    |> String.trim_trailing(".")
    |> String.split(".")
    |> Enum.all?(&Regex.match?(~r/\A[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\z/, &1))
  end

  defp dns_name?(_name), do: false

  # "No problems found" must not stand for "nothing was looked at" (a deploy gate would pass).
  defp nothing_checked(%{services: [], peers: [], self_check: nil}, {:ok, _diagnoser}) do
    [
      %{
        what:
          "nothing was checked: no DynamicSrv.Cluster or libcluster topology runs here or " <>
            "is declared in the application's config, no --service or --node was given, and " <>
            "no peer is connected",
        fix:
          "pass --service NAME (and --naming KIND:BASENAME, e.g. basename_port_ip:app) or " <>
            "--node NAME, or run the doctor in the project whose config declares the topologies"
      }
    ]
  end

  defp nothing_checked(_report, _diagnoser), do: []

  defp probe_problems(report) do
    self_problems =
      case report.self_check do
        nil -> []
        check -> check_problems(check)
      end

    service_problems =
      report.services
      |> Enum.reject(&udp_note?/1)
      |> Enum.flat_map(&probe_problem(&1.probe))

    # This node under another name is one problem (membership_problems), not also a peer's.
    peer_problems =
      report.peers
      |> Enum.reject(& &1[:this_node?])
      |> Enum.flat_map(&check_problems/1)

    self_problems ++ service_problems ++ peer_problems
  end

  # This node as its services' answers list it: missing from one, or listed under another
  # name (a member whose address and port are this node's).
  defp membership_problems(%{node: %{distributed?: true} = this} = report, listed_aliases) do
    me = String.downcase(this.name)

    Enum.flat_map(report.services, fn service ->
      names = Enum.map(List.wrap(service.dns_members), &String.downcase/1)
      others = for {^service, peer} <- listed_aliases, do: peer

      cond do
        service.dns_members == nil -> []
        others != [] -> Enum.map(others, &alias_problem(&1, this, service))
        me not in names -> [missing_problem(this, service)]
        true -> []
      end
    end)
  end

  defp membership_problems(_report, _listed_aliases), do: []

  # A peer reported as this node under another name is that one problem: its own checks are
  # not also reported (they fail for the same reason).
  defp mark_aliases(report, listed_aliases) do
    names = MapSet.new(listed_aliases, fn {_service, peer} -> peer.node end)
    peers = Enum.map(report.peers, &Map.put(&1, :this_node?, MapSet.member?(names, &1.node)))
    %{report | peers: peers}
  end

  # {service, peer} for each peer that is this node under another name and that a service's
  # answer lists.
  defp listed_aliases(%{node: %{distributed?: true}} = report) do
    aliases = aliases(report)

    for %{dns_members: [_ | _] = listed} = service <- report.services,
        names = Enum.map(listed, &String.downcase/1),
        peer <- aliases,
        String.downcase(peer.node) in names,
        do: {service, peer}
  end

  defp listed_aliases(_report), do: []

  # Peers whose address is this node's own: this node's DNS endpoint, or an address this node
  # listens on with its port. A connected peer is another node.
  defp aliases(report) do
    this = report.node
    own = report.self_check && report.self_check.endpoint
    port = this.listen_port

    report.peers
    |> Enum.reject(& &1.connected?)
    |> Enum.map(fn peer -> %{peer | endpoint: peer.endpoint || endpoint_in_name(peer.node)} end)
    |> Enum.filter(fn peer ->
      endpoint = peer.endpoint

      endpoint != nil and
        String.downcase(peer.node) != String.downcase(this.name) and
        (endpoint == own or
           (is_integer(port) and port > 0 and String.ends_with?(endpoint, ":#{port}") and
              listens_on?(this, endpoint)))
    end)
  end

  # A node bound to one address (-kernel inet_dist_use_interface, one loopback address per
  # node on a shared port) listens only there; one bound to all listens on every local one.
  defp listens_on?(%{running?: true}, endpoint) do
    case Application.get_env(:kernel, :inet_dist_use_interface) do
      ip when is_tuple(ip) -> endpoint_ip(endpoint) == ip
      _ -> local_address?(endpoint) == true
    end
  end

  defp listens_on?(_this, endpoint), do: local_address?(endpoint) == true

  defp endpoint_ip(endpoint) do
    with [_, ip_text] <- Regex.run(~r/^\[?(.*?)\]?:\d+$/, endpoint),
         {:ok, ip} <- :inet.parse_address(String.to_charlist(ip_text)) do
      ip
    else
      _ -> nil
    end
  end

  # `app-4370@10.0.0.5` says where it listens even when the port mode cannot look it up.
  defp endpoint_in_name(node) do
    with [name, host] <- String.split(node, "@", parts: 2),
         {:ok, ip} <- :inet.parse_address(String.to_charlist(host)),
         [_, digits] <- Regex.run(~r/(\d+)$/, name) do
      case ip do
        {_, _, _, _} -> "#{host}:#{digits}"
        _ -> "[#{host}]:#{digits}"
      end
    else
      _ -> nil
    end
  end

  defp alias_problem(peer, this, service) do
    %{
      what:
        "#{service.service} lists this node as #{peer.node}, not as #{this.name}: " <>
          "#{peer.endpoint} is this node's address and port. Peers dial #{peer.node}, and " <>
          "this node refuses a connection meant for another name, so no one connects to it",
      fix:
        "start this node as #{peer.node} (--name #{peer.node}, or RELEASE_NODE=#{peer.node} " <>
          "in a release#{name_mode_hint(this, peer)}), or keep #{this.name}: " <>
          keep_name_fix(this, peer, service)
    }
  end

  # app-PORT@IP in srv mode would be looked up as the SRV record app-PORT.IP, which nobody has.
  defp name_mode_hint(%{mode: "srv"}, %{node: node}) do
    if endpoint_in_name(node), do: "; with DYNAMIC_SRV_PORT_MODE=name", else: ""
  end

  defp name_mode_hint(_this, _peer), do: ""

  # Names made from the address: the naming makes the other name. Names made from SRV
  # targets: a record gives this node's address and port another target.
  defp keep_name_fix(this, peer, %{naming: {kind, _}} = service)
       when kind in [:basename_port_ip, :basename_ip] do
    "#{inspect(service.naming)} names the nodes #{service.service} lists after their " <>
      "addresses (#{peer.node}), so it never reaches #{this.name}: poll it with the " <>
      "node_naming the cluster's node names follow"
  end

  defp keep_name_fix(this, peer, service) do
    "remove the record of #{service.service} that gives this node's address and port to " <>
      "#{peer.node} (stale, or another node's), and " <> expected_listing(this, service)
  end

  defp missing_problem(this, service) do
    count = length(service.dns_members)

    sample =
      case service.dns_members do
        [] -> "no node"
        list -> "#{count} #{plural(count, "node")}: #{Enum.join(Enum.take(list, 5), ", ")}"
      end

    assumed =
      if service.source == "asked for" and service.naming == :service_prefix,
        do:
          " (names read with node_naming :service_prefix; give --naming if the cluster uses " <>
            "another)",
        else: ""

    %{
      what:
        "this node (#{this.name}) is not among the nodes #{service.service} lists " <>
          "(#{sample})#{assumed}: the other nodes never connect to it",
      fix: "make #{service.service} list it: " <> expected_listing(this, service)
    }
  end

  # What the service's answer must hold for this node to be named as it is.
  defp expected_listing(this, %{service: service, naming: naming}) do
    [name, host] = String.split(this.name, "@", parts: 2)
    port = this.listen_port
    port_text = if is_integer(port) and port > 0, do: "#{port}", else: "its port"
    prefix_match = &String.starts_with?(name, &1 <> "-")

    case naming do
      :service_prefix ->
        if String.downcase(host) == String.downcase(service) do
          "register an SRV record of #{service} with target #{name}.#{service} and port " <>
            "#{port_text} (its A record pointing at this host)"
        else
          "with node_naming :service_prefix every node is named NAME@#{service} (target " <>
            "NAME.#{service}); name this node #{name}@#{service}, or set the node_naming " <>
            "that matches #{this.name}"
        end

      {:basename_port, base} ->
        if prefix_match.(base),
          do: "register an SRV record of #{service} with target #{host} and port #{port_text}",
          else:
            "name this node #{base}-PORT@HOST (node_naming {:basename_port, #{inspect(base)}})"

      {:basename, base} ->
        if name == base,
          do: "register an SRV record of #{service} with target #{host}",
          else: "name this node #{base}@HOST (node_naming {:basename, #{inspect(base)}})"

      {:basename_port_ip, base} ->
        if prefix_match.(base),
          do:
            "register this instance in #{service} with address #{host} and port #{port_text} " <>
              "(Consul: the service's Address and Port)",
          else:
            "name this node #{base}-PORT@IP (node_naming {:basename_port_ip, #{inspect(base)}})"

      {:basename_ip, base} ->
        if name == base,
          do: "publish an A/AAAA record of #{service} with address #{host}",
          else: "name this node #{base}@IP (node_naming {:basename_ip, #{inspect(base)}})"
    end
  end

  defp check_problems(check) do
    Enum.flat_map(check.probes, &probe_problem/1) ++ check.problems
  end

  # A service whose server trims only UDP answers troubles a poll over UDP alone; a poll over
  # TCP (the default, and what `--service` assumes) gets a note in the service's block.
  defp udp_note?(%{probe: probe} = service),
    do: Map.get(probe, :udp_only, false) and Map.get(service, :dns_transport, :tcp) != :udp

  # An answer that arrived can still be wrong: a service's SRV answer trimmed over UDP.
  defp probe_problem(%{failure: nil} = probe), do: List.wrap(Map.get(probe, :problem))

  defp probe_problem(%{failure: failure} = probe) do
    [%{what: "#{probe.record_type} lookup of #{failure.message}", fix: failure.fix}]
  end

  # --- formatting --------------------------------------------------------------------------

  @doc "The report as plain lines, without trailing newlines."
  @spec format(report()) :: [String.t()]
  def format(report) do
    List.flatten([
      "DynamicSrv diagnosis of #{report.node[:name] || node()}",
      "",
      format_settings(report.settings, report.node),
      format_node(report),
      format_self(report.self_check),
      format_services(report.services),
      format_peers(report.peers, report.peers_not_checked),
      format_cache(report.cache),
      format_log(report.log),
      format_problems(report.problems)
    ])
  end

  defp format_settings([], _this), do: []

  defp format_settings(settings, this) do
    lines =
      for s <- settings do
        source =
          case s.source do
            :env -> "from the environment: #{s.variable}=#{inspect(s.raw)}"
            :default -> "default (#{s.variable} is not set)"
          end

        cond do
          s.error == nil ->
            "  #{s.variable} = #{s.value}    #{source}"

          s.variable == "ERL_DIST_PORT" and s.error =~ "is not set" and
              not Map.get(this, :distributed?, true) ->
            "  ERL_DIST_PORT: not set (a node in this port mode needs it; --node checks one)"

          true ->
            "  #{s.variable}: INVALID: #{s.error}"
        end
      end

    ["Configuration (environment variables, read when distribution starts):" | lines] ++ [""]
  end

  defp format_node(%{node: %{} = this} = report) when map_size(this) > 0 do
    state =
      cond do
        this.running? -> "running"
        this.distributed? -> "not running here; checked with this environment"
        true -> "not distributed; use --node name@host to check a node"
      end

    port =
      cond do
        this.listen_port == nil and not this.distributed? ->
          "unknown (this VM is not distributed; --node name@host checks a node)"

        this.listen_port == nil ->
          "unknown (see the configuration problems)"

        this.listen_port == 0 ->
          "any free port (release helper node)"

        this.port_registered? ->
          "#{this.listen_port} (listening)"

        true ->
          "#{this.listen_port} (#{port_source(this.mode)})"
      end

    [
      "This node:",
      "  name: #{this.name} (#{state})",
      invalid_note(report.settings),
      "  port mode: #{this.mode}; distribution port: #{port}",
      "  address family: #{family_label(this.family)}",
      "  nameservers: #{report.nameservers || "none usable"}" <>
        if(this[:nameservers_override],
          do:
            " (given to this diagnosis by --nameservers or nameservers:, not DYNAMIC_SRV_NAMESERVERS)",
          else: Nameservers.suffix(this[:nameservers_source])
        ),
      ""
    ]
  end

  defp format_node(_report), do: []

  defp port_source("name"), do: "from the node name's digits, DYNAMIC_SRV_PORT_MODE=name"
  defp port_source(_srv_or_static), do: "from ERL_DIST_PORT"

  defp invalid_note(settings) do
    case for(
           %{error: e, variable: v} <- settings,
           e != nil,
           v != "DYNAMIC_SRV_NAMESERVERS",
           do: v
         ) do
      [] -> []
      vars -> "  (DNS below was asked with the defaults for: #{Enum.join(vars, ", ")})"
    end
  end

  defp family_label(:inet6), do: "IPv6 (AAAA records)"
  defp family_label(_), do: "IPv4 (A records)"

  defp format_self(nil), do: []

  defp format_self(check) do
    note =
      if check.local_address? == false do
        "  note: #{check.endpoint} is not an address of this host's interfaces: expected " <>
          "behind NAT or a port mapping; otherwise peers dial the wrong host"
      else
        []
      end

    ["DNS for this node (what peers look up to reach it):", format_check(check, "  "), note, ""]
  end

  defp format_check(check, indent) do
    [
      "#{indent}lookup: #{check.how}",
      Enum.map(check.probes, &format_probe(&1, indent)),
      case check.endpoint do
        nil -> "#{indent}=> no address: connections to it fail"
        endpoint -> "#{indent}=> connects to #{endpoint}"
      end,
      for p <- check.problems do
        ["#{indent}PROBLEM: #{p.what}", "#{indent}  fix: #{p.fix}"]
      end
    ]
  end

  defp format_probe(%{failure: nil} = probe, indent) do
    count = length(probe.answers)

    [
      "#{indent}#{probe.record_type} #{probe.name}: #{count} #{plural(count, "answer")} " <>
        "in #{duration(probe.elapsed_us)}"
      | Enum.map(probe.answers, &"#{indent}  #{&1}")
    ]
  end

  defp format_probe(%{failure: failure} = probe, indent) do
    [
      "#{indent}#{probe.record_type} #{probe.name}: FAILED after #{duration(probe.elapsed_us)} " <>
        "(#{failure.reason}): #{failure.message}",
      "#{indent}  fix: #{failure.fix}"
    ]
  end

  defp format_services([]), do: []

  defp format_services(services) do
    for s <- services do
      members =
        case s.members do
          nil -> ""
          list -> ", #{length(list)} current #{plural(length(list), "member")}"
        end

      note =
        if udp_note?(s),
          do: ["  note: #{s.probe.problem.what}", "    #{s.probe.problem.fix}"],
          else: []

      [
        "Service #{s.service} (#{s.source}#{members}):",
        format_probe(s.probe, "  "),
        format_listed(s),
        note,
        ""
      ]
    end
  end

  defp format_listed(%{dns_members: list, naming: naming}) when is_list(list) do
    shown = Enum.take(list, 10)
    more = if length(list) > 10, do: ", ... (#{length(list)} in all)", else: ""

    "  => nodes (node_naming #{inspect(naming)}): " <>
      if(list == [], do: "none", else: Enum.join(shown, ", ") <> more)
  end

  defp format_listed(_service), do: []

  defp format_peers([], _skipped), do: ["Peers: none connected and no cluster members", ""]

  defp format_peers(peers, skipped) do
    lines =
      for peer <- peers do
        tags =
          [peer.connected? && "connected", peer.member? && "member in DNS"]
          |> Enum.filter(& &1)
          |> Enum.join(", ")

        checked =
          if peer[:this_node?],
            do: ["    this node under another name (its address and port): see the problems"],
            else: format_check(peer, "    ")

        ["  #{peer.node}#{if tags != "", do: " [#{tags}]", else: ""}" | checked]
      end

    more = if skipped > 0, do: ["  ... and #{skipped} more peers, not checked"], else: []
    ["Peers (#{length(peers)} checked):", lines, more, ""]
  end

  defp format_cache(%{entries: entries, total: total, dns_failed_ago_ms: failed}) do
    health =
      case failed do
        nil -> "DNS answering"
        ms -> "DNS FAILING: last failed lookup #{seconds(ms)} ago"
      end

    lines =
      for e <- entries do
        "  #{e.node} #{if e.family == :inet6, do: "IPv6", else: "IPv4"} #{e.endpoint}: " <>
          entry_state(e)
      end

    more = if total > length(entries), do: ["  ... and #{total - length(entries)} more"], else: []

    ["Address cache (#{total} #{plural(total, "entry", "entries")}; #{health}):", lines, more, ""]
  end

  defp entry_state(%{state: "fresh"} = e) do
    "fresh, #{seconds(e.fresh_for_ms)} left" <> failed_note(e)
  end

  defp entry_state(%{state: "stale"} = e) do
    "STALE (expired; served only while DNS fails, for #{seconds(e.stale_for_ms)} more)" <>
      failed_note(e)
  end

  defp entry_state(e), do: "DEAD (past its stale window, never served)" <> failed_note(e)

  defp failed_note(%{failed_ago_ms: nil}), do: ""
  defp failed_note(%{failed_ago_ms: ms}), do: "; last refresh FAILED #{seconds(ms)} ago"

  defp format_log(log) when map_size(log) == 0, do: []

  defp format_log(log) do
    to =
      if log.forwarder,
        do: "to Logger (DynamicSrv.LogForwarder)",
        else: "not yet (#{log.backlog} waiting)"

    dropped = log.queue_full + log.backlog_dropped
    ["Rust log events: forwarded #{to}; #{dropped} dropped", ""]
  end

  defp format_problems([]), do: ["No problems found."]

  defp format_problems(problems) do
    lines =
      problems
      |> Enum.with_index(1)
      |> Enum.map(fn {p, i} -> ["  #{i}. #{p.what}", "     fix: #{p.fix}"] end)

    ["Problems (#{length(problems)}):" | lines]
  end

  defp duration(us) when us < 10_000, do: "#{Float.round(us / 1000, 2)} ms"
  defp duration(us), do: "#{div(us, 1000)} ms"

  defp seconds(ms), do: "#{Float.round(ms / 1000, 1)} s"

  defp plural(n, word, plural \\ nil)
  defp plural(1, word, _plural), do: word
  defp plural(_n, word, nil), do: word <> "s"
  defp plural(_n, _word, plural), do: plural
end
