defmodule DynamicSrv.PollOrderTest do
  # A poll the Elixir side gave up on (its 60 s guard fired first: lookups can take longer
  # when DYNAMIC_SRV_LOOKUP_TIMEOUT_MS is long) still finishes on the DNS thread. Its answer
  # is older than the next poll's, so it must not be applied after it: that would put back a
  # node the newer answer removed, and the poller would dial it again. A real DNS server
  # (ScriptedDns) behind a UDP relay that can hold an answer makes the slow poll.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias DynamicSrv.Cluster
  alias DynamicSrv.Test.ScriptedDns

  defmodule Rec do
    def start do
      if pid = Process.whereis(__MODULE__), do: Agent.stop(pid)
      {:ok, _} = Agent.start(fn -> %{connected: MapSet.new(), log: []} end, name: __MODULE__)
    end

    def connect(node), do: record(node, :connect, &MapSet.put/2)
    def disconnect(node), do: record(node, :disconnect, &MapSet.delete/2)
    def list_nodes, do: Agent.get(__MODULE__, &MapSet.to_list(&1.connected))
    def log, do: Agent.get(__MODULE__, &Enum.reverse(&1.log))

    defp record(node, event, update) do
      Agent.update(__MODULE__, fn s ->
        %{s | connected: update.(s.connected, node), log: [{event, node} | s.log]}
      end)

      true
    end
  end

  # Relays UDP DNS between the poller and the server; `hold/1` keeps the next answer back
  # until `release/1`.
  defmodule Relay do
    def start(upstream_port) do
      test = self()

      pid =
        spawn_link(fn ->
          {:ok, down} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: true])
          {:ok, up} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: true])
          {:ok, port} = :inet.port(down)
          send(test, {:relay_port, port})
          loop(%{down: down, up: up, upstream: upstream_port, clients: %{}, hold: nil})
        end)

      receive do: ({:relay_port, port} -> {pid, "127.0.0.1:#{port}"})
    end

    def hold(pid), do: send(pid, {:hold, self()})
    def release(pid), do: send(pid, :release)

    defp loop(%{down: down, up: up} = s) do
      receive do
        {:udp, ^down, ip, port, <<id::16, _::binary>> = query} ->
          :ok = :gen_udp.send(up, {127, 0, 0, 1}, s.upstream, query)
          loop(put_in(s.clients[id], {ip, port}))

        {:udp, ^up, _, _, <<id::16, _::binary>> = answer} ->
          {{ip, port}, clients} = Map.pop(s.clients, id)

          case s.hold do
            {:next, test} ->
              send(test, :held)
              loop(%{s | clients: clients, hold: {:held, ip, port, answer}})

            _ ->
              :ok = :gen_udp.send(down, ip, port, answer)
              loop(%{s | clients: clients})
          end

        {:hold, test} ->
          loop(%{s | hold: {:next, test}})

        :release ->
          {:held, ip, port, answer} = s.hold
          :ok = :gen_udp.send(down, ip, port, answer)
          loop(%{s | hold: nil})
      end
    end
  end

  @service "svc.test"

  defp answer(names) do
    srvs = for n <- names, do: {:srv, @service, 1, 1, 4370, "#{n}.#{@service}"}

    addresses =
      for {n, i} <- Enum.with_index(names, 1), do: {:a, "#{n}.#{@service}", {127, 0, 9, i}}

    {:answer, srvs ++ addresses}
  end

  test "an answer that arrives after the guard gave up is never applied over a newer one" do
    dns = ScriptedDns.start!(nil, answer(["a", "b"]))
    on_exit(fn -> ScriptedDns.stop(dns) end)
    {relay, nameserver} = Relay.start(dns.port)
    Rec.start()

    pid =
      start_supervised!(
        {Cluster,
         service: @service,
         nameservers: nameserver,
         dns_transport: :udp,
         polling_interval: 3_600_000,
         removal_delay: 0,
         disconnect_grace: 0,
         topology: :poll_order_test,
         connect: {Rec, :connect, []},
         disconnect: {Rec, :disconnect, []},
         list_nodes: {Rec, :list_nodes, []}}
      )

    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == [:"a@svc.test", :"b@svc.test"]

    # b misses one answer.
    ScriptedDns.set_mode(dns, answer(["a"]))
    :ok = Cluster.poll_now(pid)

    # A poll gets b back from the server, but its answer is slow: the guard gives up on it.
    ScriptedDns.set_mode(dns, answer(["a", "b"]))
    Relay.hold(relay)
    slow = Task.async(fn -> Cluster.poll_now(pid) end)
    assert_receive :held, 2_000

    capture_log(fn ->
      %{poll_tag: tag} = :sys.get_state(pid)
      send(pid, {:poll_timeout, tag})
      assert Task.await(slow) == :ok

      # The next poll, then the slow answer lands.
      ScriptedDns.set_mode(dns, answer(["a"]))
      newer = Task.async(fn -> Cluster.poll_now(pid) end)
      Process.sleep(200)
      Relay.release(relay)
      assert Task.await(newer) == :ok

      :ok = Cluster.poll_now(pid)
    end)

    # In asking order: b came back, then missed two answers, so it left once, and nobody
    # dialed it again.
    assert Cluster.members(pid) == [:"a@svc.test"]
    Process.sleep(50)
    assert Enum.sort(Rec.list_nodes()) == [:"a@svc.test"]
    assert Enum.count(Rec.log(), &(&1 == {:connect, :"b@svc.test"})) == 1
  end
end
