defmodule DynamicSrv.PartialAnswersTest do
  # Answers that lack registered nodes without saying so, from a real DNS server
  # (ScriptedDns) polled by DynamicSrv.Cluster over TCP: a server that rotates a random subset
  # under a record-count cap, and one that leaves targets' addresses out now and then. Neither
  # may remove anyone; a real deregistration still does. (Found by an adversarial review:
  # both removed members every few polls before answers had to agree.)
  use ExUnit.Case, async: false

  alias DynamicSrv.Cluster
  alias DynamicSrv.Test.ScriptedDns

  import ExUnit.CaptureLog

  defmodule Rec do
    # Every member counts as connected, so a disconnect is recorded for any node that "left".
    def start do
      if pid = Process.whereis(__MODULE__), do: Agent.stop(pid)
      {:ok, _} = Agent.start(fn -> %{members: MapSet.new(), left: []} end, name: __MODULE__)
    end

    def connect(node),
      do: Agent.update(__MODULE__, &%{&1 | members: MapSet.put(&1.members, node)}) || true

    def disconnect(node), do: Agent.update(__MODULE__, &%{&1 | left: [node | &1.left]}) || true
    def list_nodes, do: Agent.get(__MODULE__, &MapSet.to_list(&1.members))
    def left, do: Agent.get(__MODULE__, & &1.left)
  end

  defp start_cluster(nameserver, transport, service) do
    Rec.start()

    {:ok, pid} =
      Cluster.start_link(
        service: service,
        node_naming: {:basename_port_ip, "app"},
        nameservers: nameserver,
        dns_transport: transport,
        polling_interval: 100,
        removal_delay: 300,
        disconnect_grace: 0,
        connect: {Rec, :connect, []},
        disconnect: {Rec, :disconnect, []},
        list_nodes: {Rec, :list_nodes, []}
      )

    on_exit(fn -> if Process.alive?(pid), do: GenServer.stop(pid) end)
    pid
  end

  defp wait_members(pid, n, deadline \\ 5_000) do
    Enum.reduce_while(1..div(deadline, 50), nil, fn _, _ ->
      if length(Cluster.members(pid)) >= n,
        do: {:halt, :ok},
        else:
          (
            Process.sleep(50)
            {:cont, nil}
          )
    end)
  end

  # Route 53 multivalue answers (AWS Cloud Map / ECS service discovery) return at most 8
  # healthy records, a random 8 per query, over UDP and TCP alike, no TC bit. Nobody
  # deregisters, yet members leave on every few polls.
  test "a server that answers a random 8 of 30 records (no TC, TCP) disconnects nobody" do
    all =
      for k <- 1..30 do
        [
          {:srv, "svc.test", 1, 1, 4000 + k, "i#{k}.addr.test"},
          {:a, "i#{k}.addr.test", {127, 0, 1, k}}
        ]
      end

    dns = ScriptedDns.start!(nil, {:answer, List.flatten(all)})
    on_exit(fn -> ScriptedDns.stop(dns) end)
    pid = start_cluster(ScriptedDns.nameserver(dns), :tcp, "svc.test")
    :ok = wait_members(pid, 30)

    # From now on every query gets its own random 8.
    ScriptedDns.set_mode(dns, {:rotate, all, 8})
    log = capture_log(fn -> Process.sleep(4_000) end)
    assert Rec.left() == []
    assert length(Cluster.members(pid)) == 30
    # One warning for the whole run of rotating answers, naming what the server does.
    assert length(String.split(log, "successive answers list different subsets")) == 2, log

    # The diagnosis sees it too: two TCP answers of 8 that disagree; a fixed 8 is no rotation.
    assert [problem] = rotation_problems(dns)
    assert problem.what =~ "8 records per answer"
    ScriptedDns.set_mode(dns, {:answer, all |> Enum.take(8) |> List.flatten()})
    assert rotation_problems(dns) == []
  end

  defp rotation_problems(dns) do
    report =
      DynamicSrv.Diagnosis.run(
        services: ["svc.test"],
        nameservers: ScriptedDns.nameserver(dns),
        env: %{"ERL_DIST_PORT" => "4370"}
      )

    Enum.filter(report.problems, &(&1.what =~ "different subset"))
  end

  # A server whose additional section sometimes lacks a target's address, and that has no A
  # record for it either: the SRV record is still there (the instance is registered), but
  # the target is "unmapped" and counts as absent from a complete answer.
  test "a registered SRV target whose address is missing now and then is not removed" do
    all =
      for k <- 1..12 do
        {{:srv, "svc.test", 1, 1, 4000 + k, "i#{k}.host.test"},
         {:a, "i#{k}.host.test", {127, 0, 3, k}}}
      end

    # A TXT record per target, so the server owns the name and answers its A query with
    # NOERROR and no records (NODATA) while the A record is out of the set.
    srvs = Enum.map(all, &elem(&1, 0)) ++ for(k <- 1..12, do: {:txt, "i#{k}.host.test", ["x"]})
    dns = ScriptedDns.start!(nil, {:answer, srvs ++ Enum.map(all, &elem(&1, 1))})
    on_exit(fn -> ScriptedDns.stop(dns) end)
    pid = start_cluster(ScriptedDns.nameserver(dns), :tcp, "svc.test")
    :ok = wait_members(pid, 12)

    rotator =
      spawn_link(fn ->
        Stream.repeatedly(fn ->
          addrs = all |> Enum.take_random(8) |> Enum.map(&elem(&1, 1))
          ScriptedDns.set_mode(dns, {:answer, srvs ++ addrs})
          Process.sleep(40)
        end)
        |> Stream.run()
      end)

    Process.sleep(4_000)
    Process.unlink(rotator)
    Process.exit(rotator, :kill)
    assert Rec.left() == []
  end

  test "a real deregistration is still removed once two answers agree" do
    records =
      for k <- 1..6 do
        [
          {:srv, "svc.test", 1, 1, 4000 + k, "i#{k}.addr.test"},
          {:a, "i#{k}.addr.test", {127, 0, 1, k}}
        ]
      end

    dns = ScriptedDns.start!(nil, {:answer, List.flatten(records)})
    on_exit(fn -> ScriptedDns.stop(dns) end)
    pid = start_cluster(ScriptedDns.nameserver(dns), :tcp, "svc.test")
    :ok = wait_members(pid, 6)

    ScriptedDns.set_mode(dns, {:answer, records |> Enum.drop(1) |> List.flatten()})
    gone = :"app-4001@127.0.1.1"

    assert Enum.any?(1..100, fn _ ->
             Process.sleep(50)
             gone not in Cluster.members(pid)
           end)

    assert Rec.left() == [gone]
    assert length(Cluster.members(pid)) == 5
  end
end
