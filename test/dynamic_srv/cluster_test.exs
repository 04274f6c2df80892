defmodule DynamicSrv.ClusterTest do
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias DynamicSrv.Cluster
  alias DynamicSrv.Cluster.{Departure, NodeAtoms, Options}

  @service "my-svc.service.consul"

  # Connect/disconnect/list MFAs record into an Agent instead of touching distribution,
  # as libcluster's own strategy tests do.
  defmodule Recorder do
    def start do
      case Process.whereis(__MODULE__) do
        nil ->
          {:ok, pid} = Agent.start_link(fn -> %{connected: MapSet.new(), log: []} end)
          Process.register(pid, __MODULE__)

        pid ->
          Agent.update(pid, fn _ -> %{connected: MapSet.new(), log: []} end)
      end
    end

    def connect(node) do
      Agent.update(__MODULE__, fn s ->
        %{s | connected: MapSet.put(s.connected, node), log: [{:connect, node} | s.log]}
      end)

      true
    end

    def disconnect(node) do
      Agent.update(__MODULE__, fn s ->
        %{s | connected: MapSet.delete(s.connected, node), log: [{:disconnect, node} | s.log]}
      end)

      true
    end

    # Raises on the first attempt for each node, then connects: a connect MFA with a bug.
    def connect_raising_once(node) do
      first? =
        Agent.get_and_update(__MODULE__, fn s ->
          if {:raised, node} in s.log,
            do: {false, s},
            else: {true, %{s | log: [{:raised, node} | s.log]}}
        end)

      if first?, do: raise("connect bug"), else: connect(node)
    end

    def drop(node),
      do: Agent.update(__MODULE__, &%{&1 | connected: MapSet.delete(&1.connected, node)})

    # A node connecting by itself (inbound), not through the strategy.
    def inbound(node),
      do: Agent.update(__MODULE__, &%{&1 | connected: MapSet.put(&1.connected, node)})

    def list_nodes, do: Agent.get(__MODULE__, &MapSet.to_list(&1.connected))
    def log, do: Agent.get(__MODULE__, &Enum.reverse(&1.log))
  end

  # A resolver whose answer the test changes between polls.
  defp answer_with(records_or_fun) do
    name = :"answer_#{System.unique_integer([:positive])}"
    :persistent_term.put(name, records_or_fun)

    resolver = fn service ->
      case :persistent_term.get(name) do
        fun when is_function(fun, 1) -> fun.(service)
        records -> records
      end
    end

    {resolver, fn new -> :persistent_term.put(name, new) end}
  end

  defp srv(name, port \\ 4370), do: {10, 10, port, String.to_charlist("#{name}.#{@service}")}

  defp start_cluster(resolver, extra \\ []) do
    Recorder.start()

    opts =
      Keyword.merge(
        [
          service: @service,
          resolver: resolver,
          polling_interval: 3_600_000,
          # Most tests here are about the two-answer rule; the time rule has its own test.
          removal_delay: 0,
          # Disconnects at once; the grace a departing node gets has its own tests.
          disconnect_grace: 0,
          # The atom budget is per topology for the life of the VM: one topology per test.
          topology: :"cluster_test_#{System.unique_integer([:positive])}",
          connect: {Recorder, :connect, []},
          disconnect: {Recorder, :disconnect, []},
          list_nodes: {Recorder, :list_nodes, []}
        ],
        extra
      )

    pid = start_supervised!({Cluster, opts})
    # The first poll runs at start; poll_now waits until a poll has been applied.
    :ok = Cluster.poll_now(pid)
    pid
  end

  defp connected, do: Enum.sort(Recorder.list_nodes())

  defp eventually(fun, tries \\ 100) do
    if fun.() or tries == 0, do: fun.(), else: Process.sleep(10) && eventually(fun, tries - 1)
  end

  test "maps SRV targets to node names by the original convention and connects them" do
    {resolver, _set} =
      answer_with([srv("node-a"), srv("node-b"), {1, 1, 1, ~c"stray.example.com"}])

    pid = start_cluster(resolver)

    assert Cluster.members(pid) == [
             :"node-a@my-svc.service.consul",
             :"node-b@my-svc.service.consul"
           ]

    assert eventually(fn -> connected() == Cluster.members(pid) end)
  end

  test "a node must be missing from two answers in a row before it is disconnected" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver)
    assert eventually(fn -> length(connected()) == 2 end)

    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    assert length(Cluster.members(pid)) == 2
    assert length(connected()) == 2

    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
    assert connected() == [:"a@my-svc.service.consul"]
    assert {:disconnect, :"b@my-svc.service.consul"} in Recorder.log()
  end

  describe "a node that left DNS gets disconnect_grace to leave by itself" do
    # Like a departing node running this poller: it leaves the cluster on its own (global's
    # way, see DynamicSrv.Cluster.Departure) within the grace, and is not disconnected again.
    test "still connected after the grace: disconnected then, not before" do
      {resolver, set} = answer_with([srv("a"), srv("b")])
      pid = start_cluster(resolver, disconnect_grace: 300)
      assert eventually(fn -> length(connected()) == 2 end)

      set.([srv("a")])
      :ok = Cluster.poll_now(pid)
      :ok = Cluster.poll_now(pid)
      assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
      assert length(connected()) == 2, "disconnected before the grace ended"

      assert eventually(fn -> connected() == [:"a@my-svc.service.consul"] end, 100)
      assert {:disconnect, :"b@my-svc.service.consul"} in Recorder.log()
    end

    test "gone by itself within the grace, or listed again: no disconnect" do
      {resolver, set} = answer_with([srv("a"), srv("b"), srv("c")])
      pid = start_cluster(resolver, disconnect_grace: 200)
      assert eventually(fn -> length(connected()) == 3 end)

      set.([srv("a")])
      :ok = Cluster.poll_now(pid)
      :ok = Cluster.poll_now(pid)
      assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
      # b leaves the cluster by itself; c is listed again before the grace ends.
      Recorder.drop(:"b@my-svc.service.consul")
      set.([srv("a"), srv("c")])
      :ok = Cluster.poll_now(pid)
      Process.sleep(400)

      refute Enum.any?(Recorder.log(), &match?({:disconnect, _}, &1))
      assert :"c@my-svc.service.consul" in connected()
    end
  end

  test "a member missing from the last complete answer is not dialed again" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver, removal_delay: 600_000)
    assert eventually(fn -> length(connected()) == 2 end)

    # b drops its connection as it is delisted: still a member (removal_delay), not dialed.
    set.([srv("a")])
    Recorder.drop(:"b@my-svc.service.consul")
    Recorder.drop(:"a@my-svc.service.consul")
    for _ <- 1..3, do: :ok = Cluster.poll_now(pid)
    assert length(Cluster.members(pid)) == 2
    assert eventually(fn -> connected() == [:"a@my-svc.service.consul"] end)
    assert Enum.count(Recorder.log(), &(&1 == {:connect, :"b@my-svc.service.consul"})) == 1

    # Listed again: dialed at once.
    set.([srv("a"), srv("b")])
    :ok = Cluster.poll_now(pid)
    assert eventually(fn -> length(connected()) == 2 end)
  end

  describe "departure (DynamicSrv.Cluster.Departure; on real nodes: integration/departure_test)" do
    defp member(name), do: :"#{name}@#{@service}"

    test "the grace ends with the connection a node left on: a new incarnation is not disconnected" do
      {resolver, set} = answer_with([srv("a"), srv("b")])
      pid = start_cluster(resolver, disconnect_grace: 300)
      assert eventually(fn -> length(Recorder.list_nodes()) == 2 end)

      # b is removed while still connected: it gets the grace...
      set.([srv("a")])
      :ok = Cluster.poll_now(pid)
      :ok = Cluster.poll_now(pid)
      assert Cluster.members(pid) == [member("a")]
      # ...its connection ends (net_kernel's nodedown), and b comes back under the same name.
      Recorder.drop(member("b"))
      send(pid, {:nodedown, member("b"), []})
      Recorder.inbound(member("b"))
      Process.sleep(500)

      refute {:disconnect, member("b")} in Recorder.log(), inspect(Recorder.log())
    end

    test "a node that departs twice within one grace gets the whole of its second grace" do
      {resolver, set} = answer_with([srv("a"), srv("b")])
      pid = start_cluster(resolver, disconnect_grace: 3_000)
      assert eventually(fn -> length(Recorder.list_nodes()) == 2 end)

      remove_b = fn ->
        set.([srv("a")])
        :ok = Cluster.poll_now(pid)
        :ok = Cluster.poll_now(pid)
        assert Cluster.members(pid) == [member("a")]
      end

      # First departure; b's connection ends, b comes back, is listed and departs again.
      remove_b.()
      first = System.monotonic_time(:millisecond)
      Recorder.drop(member("b"))
      send(pid, {:nodedown, member("b"), []})
      Recorder.inbound(member("b"))
      Process.sleep(1_000)
      set.([srv("a"), srv("b")])
      :ok = Cluster.poll_now(pid)
      remove_b.()
      second = System.monotonic_time(:millisecond)

      # The first grace ends: b is on its second grace's connection, not disconnected.
      Process.sleep(max(first + 3_300 - System.monotonic_time(:millisecond), 0))

      if System.monotonic_time(:millisecond) < second + 3_000,
        do: refute({:disconnect, member("b")} in Recorder.log(), inspect(Recorder.log()))

      # The second one ends with b still connected: now it is.
      assert eventually(fn -> {:disconnect, member("b")} in Recorder.log() end, 400)
    end

    test "a node dead before it was removed is never disconnected later" do
      {resolver, set} = answer_with([srv("a"), srv("b")])
      pid = start_cluster(resolver, disconnect_grace: 300)
      assert eventually(fn -> length(Recorder.list_nodes()) == 2 end)

      Recorder.drop(member("b"))
      set.([srv("a")])
      :ok = Cluster.poll_now(pid)
      :ok = Cluster.poll_now(pid)
      assert Cluster.members(pid) == [member("a")]
      Recorder.inbound(member("b"))
      Process.sleep(500)

      refute {:disconnect, member("b")} in Recorder.log(), inspect(Recorder.log())
    end

    test "a failed poll keeps a member on its way out undialed" do
      {resolver, set} = answer_with([srv("a"), srv("b")])
      pid = start_cluster(resolver, removal_delay: 600_000, disconnect_grace: 0)
      assert eventually(fn -> length(Recorder.list_nodes()) == 2 end)

      set.([srv("a")])
      :ok = Cluster.poll_now(pid)
      Recorder.drop(member("b"))
      :ok = Cluster.poll_now(pid)
      Process.sleep(50)
      dials = fn -> Enum.count(Recorder.log(), &(&1 == {:connect, member("b")})) end
      before = dials.()

      set.(fn _service -> raise "SERVFAIL" end)
      :ok = Cluster.poll_now(pid)
      Process.sleep(50)
      assert dials.() == before, inspect(Recorder.log())
      assert length(Cluster.members(pid)) == 2
    end

    test "the default disconnect_grace is three polls, within the bound an explicit one meets" do
      assert Options.validate!(service: @service).disconnect_grace == 15_000

      default =
        Options.validate!(service: @service, polling_interval: 30_000_000).disconnect_grace

      assert default == 86_400_000

      assert Options.validate!(service: @service, disconnect_grace: default).disconnect_grace ==
               default

      assert_raise ArgumentError, ~r/invalid disconnect_grace/, fn ->
        Options.validate!(service: @service, disconnect_grace: -1)
      end
    end

    test "plan: leaves through global unless a custom disconnect is set, global lacks it, or alone" do
      default = {:erlang, :disconnect_node, []}
      assert Departure.plan(default, [:a@h], true) == :left
      assert Departure.plan(default, [], true) == :alone
      assert {:never, why} = Departure.plan({M, :f, []}, [:a@h], true)
      assert why =~ "custom disconnect"
      assert {:never, why} = Departure.plan(default, [:a@h], false)
      assert why =~ "OTP 25.1"
      assert Departure.describe(:left, 1) =~ "disconnecting from its 1 node through"
      assert Departure.describe(:left, 5) =~ "its 5 nodes through :global.disconnect/0"
    end
  end

  test "a node missing for less than removal_delay stays, however many answers lack it" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver, removal_delay: 600_000)
    assert eventually(fn -> length(connected()) == 2 end)

    set.([srv("a")])
    for _ <- 1..20, do: :ok = Cluster.poll_now(pid)
    assert length(Cluster.members(pid)) == 2
    refute Enum.any?(Recorder.log(), &match?({:disconnect, _}, &1))
  end

  test "a node missing from two answers spanning removal_delay leaves" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver, removal_delay: 200)
    assert eventually(fn -> length(connected()) == 2 end)

    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    :ok = Cluster.poll_now(pid)
    assert length(Cluster.members(pid)) == 2
    Process.sleep(250)
    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
  end

  test "a sudden empty answer disconnects nobody; a confirmed one does" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver)
    assert eventually(fn -> length(connected()) == 2 end)

    set.([])
    :ok = Cluster.poll_now(pid)
    assert length(connected()) == 2

    set.([srv("a"), srv("b")])
    :ok = Cluster.poll_now(pid)
    set.([])
    :ok = Cluster.poll_now(pid)
    assert length(connected()) == 2
    :ok = Cluster.poll_now(pid)
    assert connected() == []
  end

  test "resolver failures keep the membership and log one warning per outage" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver)
    assert eventually(fn -> length(connected()) == 2 end)

    set.(fn _ -> {:error, :timeout} end)

    log =
      capture_log(fn ->
        for _ <- 1..10, do: :ok = Cluster.poll_now(pid)
      end)

    assert length(String.split(log, "DNS lookup of #{@service} failed")) == 2
    assert length(connected()) == 2
    assert length(Cluster.members(pid)) == 2
    refute Enum.any?(Recorder.log(), &match?({:disconnect, _}, &1))

    set.(fn _ -> raise "boom" end)
    :ok = Cluster.poll_now(pid)
    assert length(connected()) == 2

    set.([srv("a"), srv("b")])
    log = capture_log(fn -> :ok = Cluster.poll_now(pid) end)
    assert log =~ "answers again after 11 failed polls"
  end

  test "disconnect_on_deregister: false keeps nodes that left DNS" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver, disconnect_on_deregister: false)
    assert eventually(fn -> length(connected()) == 2 end)

    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
    assert length(connected()) == 2
  end

  test "nodes that dropped their connection are reconnected on the next poll" do
    {resolver, _set} = answer_with([srv("a")])
    pid = start_cluster(resolver)
    assert eventually(fn -> connected() == [:"a@my-svc.service.consul"] end)

    Recorder.drop(:"a@my-svc.service.consul")
    :ok = Cluster.poll_now(pid)
    assert eventually(fn -> connected() == [:"a@my-svc.service.consul"] end)
    assert Enum.count(Recorder.log(), &(&1 == {:connect, :"a@my-svc.service.consul"})) == 2
  end

  test "a connect MFA that raises does not stop the node being dialed on later polls" do
    {resolver, _set} = answer_with([srv("a")])

    capture_log(fn ->
      pid = start_cluster(resolver, connect: {Recorder, :connect_raising_once, []})
      assert eventually(fn -> {:raised, :"a@my-svc.service.consul"} in Recorder.log() end)

      # The failed attempt reports back asynchronously: poll until a later poll dials again.
      # (Up to 5 s: on a loaded machine the connector's report can take a while. The second
      # poll of start_cluster/2 may already have dialed again, if the report came first.)
      assert eventually(
               fn ->
                 :ok = Cluster.poll_now(pid)
                 connected() == [:"a@my-svc.service.consul"]
               end,
               500
             )

      # The first dial raised; the node connected through a later one.
      assert Enum.filter(Recorder.log(), &match?({_, :"a@my-svc.service.consul"}, &1)) ==
               [raised: :"a@my-svc.service.consul", connect: :"a@my-svc.service.consul"]
    end)
  end

  test "other node naming conventions" do
    target = ~c"10-0-0-4.node.dc1.consul"
    {resolver, _} = answer_with([{1, 1, 4370, target}])

    pid = start_cluster(resolver, node_naming: {:basename_port, "app"}, topology: :port)
    assert Cluster.members(pid) == [:"app-4370@10-0-0-4.node.dc1.consul"]
    stop_supervised!(:port)

    pid = start_cluster(resolver, node_naming: {:basename, "app"}, topology: :base)
    assert Cluster.members(pid) == [:"app@10-0-0-4.node.dc1.consul"]
    stop_supervised!(:base)

    # The address comes from the DNS answer; a resolver's IP-literal target is its own.
    {resolver, _} = answer_with([{1, 1, 4370, ~c"10.0.0.4"}, {1, 1, 4371, target}])
    pid = start_cluster(resolver, node_naming: {:basename_port_ip, "app"})
    assert Cluster.members(pid) == [:"app-4370@10.0.0.4"]
  end

  test "hostile targets are ignored and new atoms are bounded by max_node_atoms" do
    served = fn prefix ->
      for i <- 1..3_000, do: "#{prefix}#{System.unique_integer([:positive])}x#{i}"
    end

    records = fn names ->
      for name <- names, do: {1, 1, 1, String.to_charlist("#{name}.#{@service}")}
    end

    bad = [
      {1, 1, 1, ~c"bad name.#{@service}"},
      {1, 1, 1, String.to_charlist(String.duplicate("a", 64) <> ".#{@service}")}
    ]

    hostile = served.("h")
    {resolver, set} = answer_with(bad ++ records.(hostile))

    log =
      capture_log(fn ->
        pid = start_cluster(resolver, max_nodes: 50, max_node_atoms: 120)
        assert length(Cluster.members(pid)) == 50

        # Two more floods of fresh names: members stay capped, atoms stop at the budget.
        floods =
          for prefix <- ["f", "g"] do
            names = served.(prefix)
            set.(records.(names))
            :ok = Cluster.poll_now(pid)
            :ok = Cluster.poll_now(pid)
            assert length(Cluster.members(pid)) <= 50
            names
          end

        # 9,000 distinct names served; exactly the budget of 120 became atoms.
        created =
          Enum.count(hostile ++ List.flatten(floods), fn name ->
            NodeAtoms.existing("#{name}@#{@service}") != :error
          end)

        assert created == 120
      end)

    assert log =~ "max_node_atoms=120"
    assert log =~ "beyond max_nodes=50"
  end

  test "the atom budget is kept per topology across restarts" do
    fresh = fn -> for i <- 1..20, do: "r#{System.unique_integer([:positive])}x#{i}" end
    {resolver, set} = answer_with([])
    topology = :"atoms_#{System.unique_integer([:positive])}"

    {served, _log} =
      with_log(fn ->
        for _start <- 1..3 do
          names = fresh.()
          set.(for name <- names, do: {1, 1, 1, String.to_charlist("#{name}.#{@service}")})
          start_cluster(resolver, topology: topology, max_nodes: 50, max_node_atoms: 10)
          stop_supervised!(topology)
          names
        end
      end)

    created =
      Enum.count(List.flatten(served), &(NodeAtoms.existing("#{&1}@#{@service}") != :error))

    assert created == 10

    # Another topology has its own budget.
    names = fresh.()
    set.(for name <- names, do: {1, 1, 1, String.to_charlist("#{name}.#{@service}")})

    capture_log(fn ->
      start_cluster(resolver, topology: :"#{topology}_other", max_node_atoms: 10)
    end)

    assert Enum.count(names, &(NodeAtoms.existing("#{&1}@#{@service}") != :error)) == 10
  end

  # The 60 s guard against a lost reply fires before a slow lookup's reply arrives.
  defp fire_poll_guard(pid) do
    %{poll_tag: tag} = :sys.get_state(pid)
    send(pid, {:poll_timeout, tag})
  end

  # A resolver answer that waits for the test: returns `records` once released.
  defp held(records) do
    test = self()

    fn _service ->
      send(test, {:resolving, self()})

      receive do
        :release -> records
      end
    end
  end

  test "a node that left in a poll whose reply came too late is still disconnected" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver)
    assert eventually(fn -> length(connected()) == 2 end)

    # b misses one answer, then the answer that confirms its leave is slower than the guard.
    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    set.(held([srv("a")]))
    waiter = Task.async(fn -> Cluster.poll_now(pid) end)
    assert_receive {:resolving, worker}

    capture_log(fn ->
      fire_poll_guard(pid)
      assert Task.await(waiter) == :ok
      send(worker, :release)

      set.([srv("a")])
      :ok = Cluster.poll_now(pid)
    end)

    assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
    assert eventually(fn -> connected() == [:"a@my-svc.service.consul"] end)
    assert {:disconnect, :"b@my-svc.service.consul"} in Recorder.log()
  end

  test "a timer poll queued behind poll_now loses no leave" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver)
    assert eventually(fn -> length(connected()) == 2 end)

    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    set.(held([srv("a")]))
    waiter = Task.async(fn -> Cluster.poll_now(pid) end)
    assert_receive {:resolving, first}
    # The timer fired just as poll_now cancelled it: its :poll was already queued.
    send(pid, :poll)
    send(first, :release)

    receive do
      {:resolving, second} -> send(second, :release)
    after
      200 -> :ok
    end

    assert Task.await(waiter) == :ok
    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    assert eventually(fn -> connected() == [:"a@my-svc.service.consul"] end)
    assert {:disconnect, :"b@my-svc.service.consul"} in Recorder.log()
  end

  test "a poll abandoned by the guard never rolls the membership back" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver)
    assert eventually(fn -> length(connected()) == 2 end)

    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    # This poll's answer is old news by the time it lands: it still lists b.
    set.(held([srv("a"), srv("b")]))
    waiter = Task.async(fn -> Cluster.poll_now(pid) end)
    assert_receive {:resolving, stale}

    capture_log(fn ->
      fire_poll_guard(pid)
      assert Task.await(waiter) == :ok

      # A newer poll, then the abandoned one finishes: the newer answer must not be overruled.
      set.([srv("a")])
      newer = Task.async(fn -> Cluster.poll_now(pid) end)
      Process.sleep(100)
      send(stale, :release)
      assert Task.await(newer) == :ok

      :ok = Cluster.poll_now(pid)
    end)

    assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
    Process.sleep(50)
    assert connected() == [:"a@my-svc.service.consul"]
    assert Enum.count(Recorder.log(), &(&1 == {:connect, :"b@my-svc.service.consul"})) == 1
  end

  test "a reply with an old tag changes nothing" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver)
    assert eventually(fn -> length(connected()) == 2 end)
    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    :ok = Cluster.poll_now(pid)
    assert connected() == [:"a@my-svc.service.consul"]

    # As a reply from before b left would look, arriving late.
    old = %{
      members: ["a@my-svc.service.consul", "b@my-svc.service.consul"],
      joined: [],
      left: ["c@my-svc.service.consul"],
      failed: false,
      outage_started: nil,
      outage_ended: nil,
      partial_warning: nil,
      unmapped: [],
      over_limit: 0,
      records: 2
    }

    send(pid, {make_ref(), old})
    assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == [:"a@my-svc.service.consul"]
    Process.sleep(50)
    assert connected() == [:"a@my-svc.service.consul"]
  end

  test "a failed poll between two over-limit answers does not repeat the max_nodes warning" do
    many = for i <- 1..5, do: srv("m#{i}")
    {resolver, set} = answer_with(many)

    log =
      capture_log(fn ->
        pid = start_cluster(resolver, max_nodes: 3)
        set.(fn _ -> {:error, :timeout} end)
        :ok = Cluster.poll_now(pid)
        set.(many)
        :ok = Cluster.poll_now(pid)
        assert length(Cluster.members(pid)) == 3
      end)

    assert length(String.split(log, "beyond max_nodes=3")) == 2, log
  end

  test "invalid options are refused with a clear message" do
    Process.flag(:trap_exit, true)

    assert {:error, {%ArgumentError{message: message}, _}} = Cluster.start_link([])
    assert message =~ "missing required config key :service"

    assert {:error, {%ArgumentError{message: message}, _}} =
             Cluster.start_link(service: @service, polling_interval: 0)

    assert message =~ "invalid polling_interval: 0"

    assert {:error, {%ArgumentError{message: message}, _}} =
             Cluster.start_link(service: @service, node_naming: {:basename, ""})

    assert message =~ "invalid node_naming"

    assert {:error, {%ArgumentError{message: message}, _}} =
             Cluster.start_link(service: @service, dns_transport: :quic)

    assert message =~ "invalid dns_transport: :quic, expected :tcp or :udp"

    assert {:error, {%ArgumentError{message: message}, _}} =
             Cluster.start_link(service: @service, removal_delay: -1)

    assert message =~ "invalid removal_delay: -1, expected milliseconds from 0 to 86400000"

    assert {:error, {:invalid_config, message}} =
             Cluster.start_link(service: @service, nameservers: "nope")

    assert message =~ "nameservers=\"nope\""
  end

  test "the libcluster strategy starts the same engine from a libcluster state" do
    {resolver, _} = answer_with([srv("a")])
    Recorder.start()

    state = %{
      topology: :test_topology,
      connect: {Recorder, :connect, []},
      disconnect: {Recorder, :disconnect, []},
      list_nodes: {Recorder, :list_nodes, []},
      config: [service: @service, resolver: resolver, polling_interval: 3_600_000],
      meta: nil
    }

    {:ok, pid} = Elixir.Cluster.Strategy.DynamicSrv.start_link([state])
    :ok = Cluster.poll_now(pid)
    assert eventually(fn -> connected() == [:"a@my-svc.service.consul"] end)
    GenServer.stop(pid)
  end
end
