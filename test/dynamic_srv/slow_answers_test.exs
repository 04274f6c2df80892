defmodule DynamicSrv.SlowAnswersTest do
  # DYNAMIC_SRV_LOOKUP_TIMEOUT_MS bounds what a connection setup waits on DNS. Nothing waits
  # on a poll, and an answer that comes before the next poll is due is still the newest
  # membership, so a poll waits up to its polling interval (at most 10 s). A real DNS server
  # (ScriptedDns) that answers late stands in for an overloaded one.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias DynamicSrv.Cluster
  alias DynamicSrv.Test.ScriptedDns

  @service "svc.test"
  @late_ms 900

  setup do
    previous = System.get_env("DYNAMIC_SRV_LOOKUP_TIMEOUT_MS")
    System.put_env("DYNAMIC_SRV_LOOKUP_TIMEOUT_MS", "300")

    on_exit(fn ->
      if previous,
        do: System.put_env("DYNAMIC_SRV_LOOKUP_TIMEOUT_MS", previous),
        else: System.delete_env("DYNAMIC_SRV_LOOKUP_TIMEOUT_MS")
    end)

    records = [
      {:srv, @service, 1, 1, 4370, "a.#{@service}"},
      {:a, "a.#{@service}", {127, 0, 9, 1}}
    ]

    dns = ScriptedDns.start!(nil, {:delay, @late_ms, {:answer, records}})
    on_exit(fn -> ScriptedDns.stop(dns) end)
    %{dns: dns}
  end

  defp poller(dns, transport, interval, name) do
    start_supervised!(
      {Cluster,
       service: @service,
       nameservers: ScriptedDns.nameserver(dns),
       dns_transport: transport,
       polling_interval: interval,
       topology: name,
       connect: {__MODULE__, :connect, []},
       list_nodes: {__MODULE__, :list_nodes, []}},
      id: name
    )
  end

  def connect(_node), do: true
  def list_nodes, do: []

  for transport <- [:tcp, :udp] do
    test "over #{transport}, an answer later than the lookup timeout but before the next poll is due is taken",
         %{dns: dns} do
      pid = poller(dns, unquote(transport), 5_000, :"slow_#{unquote(transport)}")
      :ok = Cluster.poll_now(pid)
      assert Cluster.members(pid) == [:"a@svc.test"]
    end
  end

  test "with an interval shorter than the lookup timeout, the lookup timeout is the budget",
       %{dns: dns} do
    System.put_env("DYNAMIC_SRV_LOOKUP_TIMEOUT_MS", "2000")
    pid = poller(dns, :tcp, 300, :slow_floor)
    :ok = Cluster.poll_now(pid)
    assert Cluster.members(pid) == [:"a@svc.test"]
  end

  test "with an interval shorter than the answer takes, and a short lookup timeout, the poll fails",
       %{dns: dns} do
    pid = poller(dns, :tcp, 400, :slow_short_interval)

    log =
      capture_log(fn ->
        :ok = Cluster.poll_now(pid)
        assert Cluster.members(pid) == []
      end)

    assert log =~ "DNS lookup of svc.test failed"
  end
end
