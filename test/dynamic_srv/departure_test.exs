defmodule DynamicSrv.DepartureTest do
  # This node's side of a departure (DynamicSrv.Cluster.Departure), with an injected
  # resolver. The VM is :nonode@nohost: under service "nohost" the target nonode.nohost is
  # this node, so answers can list it or not. Found by the second adversarial review.
  use ExUnit.Case, async: false
  import ExUnit.CaptureLog
  alias DynamicSrv.Cluster

  @service "nohost"
  defp srv(name), do: {10, 10, 4370, String.to_charlist("#{name}.#{@service}")}

  def connect(node), do: send(:departure_test, {:dial, node}) && true
  def list_nodes, do: []

  setup do
    Process.register(self(), :departure_test)
    key = {__MODULE__, System.unique_integer([:positive])}
    :persistent_term.put(key, [srv("nonode"), srv("a")])
    on_exit(fn -> :persistent_term.erase(key) end)
    %{answer: &:persistent_term.put(key, &1), resolver: fn _ -> :persistent_term.get(key) end}
  end

  defp start(resolver, extra \\ []) do
    opts =
      Keyword.merge(
        [
          service: @service,
          resolver: resolver,
          polling_interval: 3_600_000,
          removal_delay: 0,
          disconnect_grace: 0,
          topology: :"departure_#{System.unique_integer([:positive])}",
          connect: {__MODULE__, :connect, []},
          list_nodes: {__MODULE__, :list_nodes, []}
        ],
        extra
      )

    pid = start_supervised!({Cluster, opts})
    :ok = Cluster.poll_now(pid)
    pid
  end

  defp flush, do: receive(do: (_ -> flush()), after: (0 -> :ok))

  test "a confirmation that arrives before its own answer lacks it still counts", c do
    pid = start(c.resolver)
    send(pid, {:dynamic_srv_left, @service, :a@nohost})
    c.answer.([srv("a")])

    log =
      capture_log(fn ->
        :ok = Cluster.poll_now(pid)
        Process.sleep(50)
      end)

    assert log =~ "not connected to any node (a@nohost found it gone too)", log
  end

  test "once it left it dials nobody until its own answer lists it again", c do
    pid = start(c.resolver, removal_delay: 600_000)
    c.answer.([srv("a")])
    :ok = Cluster.poll_now(pid)

    capture_log(fn ->
      send(pid, {:dynamic_srv_left, "NOHOST.", :a@nohost}) && Cluster.members(pid)
    end)

    flush()

    :ok = Cluster.poll_now(pid)
    refute_receive {:dial, _}, 100

    c.answer.([srv("nonode"), srv("a")])
    :ok = Cluster.poll_now(pid)
    assert_receive {:dial, :a@nohost}, 500
  end

  test "messages of other shapes, or for another service, change nothing", c do
    pid = start(c.resolver)
    c.answer.([srv("a")])
    :ok = Cluster.poll_now(pid)

    log =
      capture_log(fn ->
        for msg <- [
              {:dynamic_srv_left, @service, {:x, self()}},
              {:dynamic_srv_left, :svc, :a@nohost},
              {:dynamic_srv_left, "other.service", :a@nohost},
              {:departed, :oops},
              {:nodedown, "x", []}
            ],
            do: send(pid, msg)

        Cluster.members(pid)
      end)

    assert Process.alive?(pid)
    refute log =~ "found it gone too"
  end

  test "plain children of two services each hear departures, under names of their own", c do
    for service <- ["s1.example", "s2.example"] do
      start_supervised!(
        {Cluster, service: service, resolver: c.resolver, polling_interval: 3_600_000},
        id: service
      )
    end

    for service <- ["s1.example", "s2.example"],
        do: assert(is_pid(Process.whereis(:"Elixir.DynamicSrv.Cluster.#{service}")))
  end
end
