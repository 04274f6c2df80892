defmodule DynamicSrv.DepartureTest do
  # The departure rules (DynamicSrv.Cluster.Departure, `disconnect_grace`, `leaving`) with an
  # injected resolver and recording MFAs; on real nodes in test/integration/departure_test.exs.
  use ExUnit.Case, async: false

  alias DynamicSrv.Cluster
  alias DynamicSrv.Cluster.{Departure, Options}

  @service "my-svc.service.consul"

  defmodule Rec do
    def start do
      case Process.whereis(__MODULE__) do
        nil ->
          {:ok, pid} = Agent.start(fn -> %{connected: MapSet.new(), log: []} end)
          Process.register(pid, __MODULE__)

        _pid ->
          Agent.update(__MODULE__, fn _ -> %{connected: MapSet.new(), log: []} end)
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

    # A node connecting to us by itself (inbound), not through the strategy.
    def inbound(node),
      do: Agent.update(__MODULE__, &%{&1 | connected: MapSet.put(&1.connected, node)})

    def drop(node),
      do: Agent.update(__MODULE__, &%{&1 | connected: MapSet.delete(&1.connected, node)})

    def list_nodes, do: Agent.get(__MODULE__, &MapSet.to_list(&1.connected))
    def log, do: Agent.get(__MODULE__, &Enum.reverse(&1.log))
  end

  defp answer_with(records) do
    name = :"review_answer_#{System.unique_integer([:positive])}"
    :persistent_term.put(name, records)

    resolver = fn _service ->
      case :persistent_term.get(name) do
        :fail -> raise "SERVFAIL"
        records -> records
      end
    end

    {resolver, fn new -> :persistent_term.put(name, new) end}
  end

  defp srv(name), do: {10, 10, 4370, String.to_charlist("#{name}.#{@service}")}
  defp n(name), do: :"#{name}@#{@service}"

  defp start_cluster(resolver, opts) do
    Rec.start()

    opts =
      [
        service: @service,
        resolver: resolver,
        polling_interval: 3_600_000,
        removal_delay: 0,
        topology: :"review_#{System.unique_integer([:positive])}",
        connect: {Rec, :connect, []},
        disconnect: {Rec, :disconnect, []},
        list_nodes: {Rec, :list_nodes, []}
      ]
      |> Keyword.merge(opts)

    pid = start_supervised!({Cluster, opts})
    :ok = Cluster.poll_now(pid)
    pid
  end

  defp eventually(fun, tries \\ 100) do
    if fun.() or tries == 0, do: fun.(), else: Process.sleep(10) && eventually(fun, tries - 1)
  end

  test "the grace ends with the connection a node left on: a new incarnation is not disconnected" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver, disconnect_grace: 300)
    assert eventually(fn -> length(Rec.list_nodes()) == 2 end)

    # b is removed while still connected: it gets the grace...
    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == [n("a")]
    # ...its connection ends (net_kernel's nodedown), and b comes back under the same name.
    Rec.drop(n("b"))
    send(pid, {:nodedown, n("b")})
    Rec.inbound(n("b"))
    Process.sleep(500)

    refute {:disconnect, n("b")} in Rec.log(), inspect(Rec.log())
  end

  test "a node dead before it was removed is never disconnected later" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver, disconnect_grace: 300)
    assert eventually(fn -> length(Rec.list_nodes()) == 2 end)

    Rec.drop(n("b"))
    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == [n("a")]
    Rec.inbound(n("b"))
    Process.sleep(500)

    refute {:disconnect, n("b")} in Rec.log(), inspect(Rec.log())
  end

  test "a failed poll keeps a member on its way out undialed" do
    {resolver, set} = answer_with([srv("a"), srv("b")])
    pid = start_cluster(resolver, removal_delay: 600_000, disconnect_grace: 0)
    assert eventually(fn -> length(Rec.list_nodes()) == 2 end)

    set.([srv("a")])
    :ok = Cluster.poll_now(pid)
    Rec.drop(n("b"))
    :ok = Cluster.poll_now(pid)
    Process.sleep(50)
    dials = fn -> Enum.count(Rec.log(), &(&1 == {:connect, n("b")})) end
    before = dials.()

    set.(:fail)
    :ok = Cluster.poll_now(pid)
    Process.sleep(50)
    assert dials.() == before, inspect(Rec.log())
    assert length(Cluster.members(pid)) == 2
  end

  test "the default disconnect_grace is three polls, within the bound an explicit one meets" do
    assert Options.validate!(service: @service).disconnect_grace == 15_000
    default = Options.validate!(service: @service, polling_interval: 30_000_000).disconnect_grace
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
