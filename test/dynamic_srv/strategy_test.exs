defmodule DynamicSrv.StrategyTest do
  # Cluster.Strategy.DynamicSrv as libcluster drives it: the state's `meta` as the starting
  # membership, libcluster's log prefix, and `@behaviour Cluster.Strategy` only when
  # libcluster is compiled in. (libcluster itself runs in test/integration/libcluster_test.exs,
  # through the 3.5 test double.)
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias DynamicSrv.Cluster

  @service "my-svc.service.consul"

  defmodule Links do
    # Connect/disconnect/list MFAs over an Agent, as libcluster's own strategy tests do.
    def start do
      if pid = Process.whereis(__MODULE__), do: Agent.stop(pid)
      {:ok, pid} = Agent.start(fn -> %{connected: MapSet.new(), log: []} end)
      Process.register(pid, __MODULE__)
    end

    def connect(node) do
      Agent.update(__MODULE__, fn s ->
        %{s | connected: MapSet.put(s.connected, node), log: s.log ++ [{:connect, node}]}
      end)

      true
    end

    def refuse(node) do
      Agent.update(__MODULE__, fn s -> %{s | log: s.log ++ [{:refused, node}]} end)
      false
    end

    def disconnect(node) do
      Agent.update(__MODULE__, fn s ->
        %{s | connected: MapSet.delete(s.connected, node), log: s.log ++ [{:disconnect, node}]}
      end)

      true
    end

    def list_nodes, do: Agent.get(__MODULE__, &MapSet.to_list(&1.connected))
    def log, do: Agent.get(__MODULE__, & &1.log)
  end

  defp state(meta, config, connect \\ :connect) do
    Links.start()

    %{
      topology: :app,
      connect: {Links, connect, []},
      disconnect: {Links, :disconnect, []},
      list_nodes: {Links, :list_nodes, []},
      config: [service: @service, polling_interval: 3_600_000, disconnect_grace: 0] ++ config,
      meta: meta
    }
  end

  # A resolver whose answer is the list in an Agent.
  defp resolver(targets) do
    {:ok, agent} = Agent.start(fn -> targets end)

    fun = fn _service ->
      for t <- Agent.get(agent, & &1), do: {0, 0, 4370, ~c"#{t}.#{@service}"}
    end

    {fun, agent}
  end

  test "a state's meta is the starting membership: connected, then removed by the same rules" do
    {resolver, _answer} = resolver(["a"])
    seeds = MapSet.new([:"a@my-svc.service.consul", :"b@my-svc.service.consul", node()])

    {:ok, pid} =
      Elixir.Cluster.Strategy.DynamicSrv.start_link([
        state(seeds, resolver: resolver, removal_delay: 0)
      ])

    # The first poll (at start) lists only a; b is a member nonetheless, and connected. (Wait
    # for that poll itself: a poll_now could run after it, and be the second answer.)
    assert eventually(fn -> :sys.get_state(pid).poll_tag == nil end)
    assert Cluster.members(pid) == [:"a@my-svc.service.consul", :"b@my-svc.service.consul"]
    assert eventually(fn -> length(Links.list_nodes()) == 2 end)

    # Missing from two complete answers that agree: b leaves and is disconnected, exactly as
    # a node DNS had listed. This node itself was never a member.
    log =
      capture_log(fn ->
        :ok = Cluster.poll_now(pid)
        assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
      end)

    assert {:disconnect, :"b@my-svc.service.consul"} in Links.log()
    assert Links.list_nodes() == [:"a@my-svc.service.consul"]
    # Under the strategy, this package's lines carry libcluster's prefix.
    assert log =~ "[libcluster:app] 1 node left #{@service} in DNS: b@my-svc.service.consul"

    GenServer.stop(pid)
  end

  test "service: :ignore under the strategy: the one info line carries libcluster's prefix" do
    log =
      capture_log(fn ->
        assert :ignore =
                 Elixir.Cluster.Strategy.DynamicSrv.start_link([
                   %{state(nil, []) | config: [service: :ignore]}
                 ])
      end)

    assert log =~ "[libcluster:app] DynamicSrv.Cluster topology :app: service is :ignore"
  end

  test "meta that is not a list of nodes is ignored with one warning; nil starts empty" do
    {resolver, _} = resolver([])

    log =
      capture_log(fn ->
        {:ok, pid} =
          Elixir.Cluster.Strategy.DynamicSrv.start_link([
            state(%{not: :nodes}, resolver: resolver)
          ])

        :ok = Cluster.poll_now(pid)
        assert Cluster.members(pid) == []
        GenServer.stop(pid)
      end)

    assert log =~
             "[libcluster:app] ignoring the starting members of #{@service}: expected a list " <>
               "or MapSet of node names"

    {:ok, pid} = Elixir.Cluster.Strategy.DynamicSrv.start_link([state(nil, resolver: resolver)])
    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == []
    GenServer.stop(pid)
  end

  test "a failed connect is logged once; DynamicSrv.Cluster alone logs without the prefix" do
    {resolver, _} = resolver(["down"])

    log =
      capture_log([level: :debug], fn ->
        {:ok, pid} =
          Elixir.Cluster.Strategy.DynamicSrv.start_link([
            state(nil, [resolver: resolver], :refuse)
          ])

        :ok = Cluster.poll_now(pid)
        assert eventually(fn -> dial_reported?(pid) end)
        GenServer.stop(pid)
      end)

    # Each poll dials a member not connected (unless a dial is still under way): one line
    # per attempt.
    attempts = Links.log()
    assert Enum.uniq(attempts) == [{:refused, :"down@my-svc.service.consul"}]
    assert length(Regex.scan(~r/down@my-svc\.service\.consul/, log)) == length(attempts)
    assert log =~ "[libcluster:app] could not connect to down@my-svc.service.consul: false"

    Links.start()

    log =
      capture_log([level: :debug], fn ->
        {:ok, pid} =
          Cluster.start_link(
            service: @service,
            resolver: resolver,
            polling_interval: 3_600_000,
            connect: {Links, :refuse, []},
            list_nodes: {Links, :list_nodes, []}
          )

        :ok = Cluster.poll_now(pid)
        assert eventually(fn -> dial_reported?(pid) end)
        GenServer.stop(pid)
      end)

    assert log =~ "could not connect to down@my-svc.service.consul: false"
    refute log =~ "[libcluster:"
  end

  @tag :tmp_dir
  test "declares @behaviour Cluster.Strategy only when libcluster is compiled in; both compile cleanly",
       %{tmp_dir: dir} do
    # The package's modules, without the one compiled here (it would be "redefined").
    ebin = Path.join(dir, "ebin")
    File.cp_r!(Path.dirname(:code.which(DynamicSrv.Cluster)), ebin)
    File.rm!(Path.join(ebin, "Elixir.Cluster.Strategy.DynamicSrv.beam"))
    source = Path.expand("../../lib/cluster/strategy/dynamic_srv.ex", __DIR__)
    double = Path.expand("../fixtures/libcluster/cluster_strategy.ex", __DIR__)
    elixirc = System.find_executable("elixirc")

    compile = fn out, paths ->
      File.mkdir_p!(out)

      System.cmd(
        elixirc,
        ["--warnings-as-errors", "-o", out] ++ Enum.flat_map(paths, &["-pa", &1]) ++ [source],
        stderr_to_stdout: true
      )
    end

    without = Path.join(dir, "without")
    assert {output, 0} = compile.(without, [ebin])
    refute output =~ "warning", output

    libcluster = Path.join(dir, "libcluster")
    File.mkdir_p!(libcluster)
    assert {_, 0} = System.cmd(elixirc, ["-o", libcluster, double], stderr_to_stdout: true)
    with_double = Path.join(dir, "with")
    assert {output, 0} = compile.(with_double, [ebin, libcluster])
    refute output =~ "warning", output

    behaviours = fn out ->
      beam = Path.join(out, "Elixir.Cluster.Strategy.DynamicSrv.beam")
      {:ok, {_, [attributes: attrs]}} = :beam_lib.chunks(String.to_charlist(beam), [:attributes])
      Keyword.get(attrs, :behaviour, [])
    end

    assert behaviours.(without) == []
    assert behaviours.(with_double) == [Elixir.Cluster.Strategy]
  end

  # The connect MFA has run and the poller has handled the connector's report, which is where
  # a failure is logged (stopping the poller earlier can lose the line).
  defp dial_reported?(pid),
    do: Links.log() != [] and MapSet.size(:sys.get_state(pid).connecting) == 0

  defp eventually(fun, tries \\ 100) do
    cond do
      fun.() -> true
      tries == 0 -> false
      true -> Process.sleep(20) && eventually(fun, tries - 1)
    end
  end
end
