defmodule DynamicSrv.Rev11ReviewTest do
  # Adversarial review of issue 11 (branch rev11): regression tests for findings in the shared
  # address cache and its topology writes. Each test states the expected (safe) behaviour and
  # fails on the code under review. Same harness as shared_cache_test.exs.
  use ExUnit.Case, async: false

  alias DynamicSrv.Native
  alias DynamicSrv.Test.ScriptedDns

  setup do
    :ok = Native.load()
    :ok
  end

  defp start_dns(fun) do
    dns = ScriptedDns.start!(nil, {:forge, fun})
    on_exit(fn -> ScriptedDns.stop(dns) end)
    dns
  end

  defp vars(dns, port_mode, extra \\ %{}) do
    Map.merge(
      %{
        "DYNAMIC_SRV_NAMESERVERS" => ScriptedDns.nameserver(dns),
        "DYNAMIC_SRV_PORT_MODE" => port_mode,
        "ERL_DIST_PORT" => "4370"
      },
      extra
    )
  end

  defp engine(vars) do
    {:ok, engine} = Native.configure(vars)
    engine
  end

  defp resolve(engine, node) do
    tag = make_ref()
    :ok = Native.lookup(engine, node, :inet, self(), tag)

    receive do
      {^tag, answer} -> answer
    after
      10_000 -> flunk("no answer for #{node}")
    end
  end

  defp topology(vars, service, {kind, base}) do
    {:ok, topology} =
      Native.topology_new(vars, {service, kind, base, :inet, 2000, nil, {:tcp, 0}})

    topology
  end

  defp poll(topology) do
    tag = make_ref()
    :ok = Native.topology_poll(topology, self(), tag)

    receive do
      {^tag, poll} -> poll
    after
      60_000 -> flunk("no poll result")
    end
  end

  test "rev11 finding 1: an agreeing answer takes the entry over, and the next one redirects it" do
    forged = :atomics.new(1, [])

    dns =
      start_dns(fn
        "h.takeover.test", :a ->
          {[{:a, "h.takeover.test", {127, 0, 0, 10}}], [], ttl: 60}

        "evil-takeover.test", :srv ->
          # First poll agrees with what the epmd module resolved; the second one lies.
          ip = if :atomics.get(forged, 1) == 0, do: {127, 0, 0, 10}, else: {127, 0, 0, 66}

          {[{:srv, "evil-takeover.test", 1, 1, 9999, "h.takeover.test"}],
           [{:a, "h.takeover.test", ip}], ttl: 86_400}

        _, _ ->
          nil
      end)

    vars = vars(dns, "static")
    engine = engine(vars)
    assert resolve(engine, "app@h.takeover.test") == {:ok, {127, 0, 0, 10}, 4370}

    evil = topology(vars, "evil-takeover.test", {:basename, "app"})
    assert %{members: ["app@h.takeover.test"]} = poll(evil)
    :atomics.put(forged, 1, 1)
    assert %{members: ["app@h.takeover.test"]} = poll(evil)

    # SECURITY.md: "A topology never redirects a node someone else resolved".
    assert Native.lookup_cached(engine, "app@h.takeover.test", :inet) ==
             {:ok, {127, 0, 0, 10}, 4370}
  end

  test "rev11 finding 1b: an agreeing answer pins another source's entry for its own TTL" do
    moved = :atomics.new(1, [])

    dns =
      start_dns(fn
        "h.pin.test", :a ->
          ip = if :atomics.get(moved, 1) == 0, do: {127, 0, 0, 10}, else: {127, 0, 0, 11}
          {[{:a, "h.pin.test", ip}], [], ttl: 1}

        "evil-pin.test", :srv ->
          {[{:srv, "evil-pin.test", 1, 1, 9999, "h.pin.test"}],
           [{:a, "h.pin.test", {127, 0, 0, 10}}], ttl: 86_400}

        _, _ ->
          nil
      end)

    vars = vars(dns, "static", %{"DYNAMIC_SRV_MIN_TTL_MS" => "0"})
    engine = engine(vars)
    assert resolve(engine, "app@h.pin.test") == {:ok, {127, 0, 0, 10}, 4370}

    evil = topology(vars, "evil-pin.test", {:basename, "app"})
    assert %{members: ["app@h.pin.test"]} = poll(evil)

    # The legit record (TTL 1 s) moves; its entry should have expired by now, so the next
    # connection asks DNS and finds the new address.
    :atomics.put(moved, 1, 1)
    Process.sleep(1_500)
    assert Native.lookup_cached(engine, "app@h.pin.test", :inet) == :miss
  end

  test "rev11 finding 2: a restarted topology cannot correct its predecessor's entries" do
    moved = :atomics.new(1, [])

    dns =
      start_dns(fn
        "moved.test", :srv ->
          ip = if :atomics.get(moved, 1) == 0, do: {127, 0, 0, 41}, else: {127, 0, 0, 51}

          {[{:srv, "moved.test", 1, 1, 4001, "n1.moved.test"}], [{:a, "n1.moved.test", ip}],
           ttl: 600}

        _, _ ->
          nil
      end)

    vars = vars(dns, "static")
    engine = engine(vars)
    first = topology(vars, "moved.test", {:basename, "app"})
    assert %{members: ["app@n1.moved.test"]} = poll(first)

    assert Native.lookup_cached(engine, "app@n1.moved.test", :inet) ==
             {:ok, {127, 0, 0, 41}, 4370}

    # The poller restarts (same service, same name) and the node is rescheduled at a new
    # address under the same host name (a StatefulSet pod).
    second = topology(vars, "moved.test", {:basename, "app"})
    :atomics.put(moved, 1, 1)
    assert %{members: ["app@n1.moved.test"]} = poll(second)

    assert Native.lookup_cached(engine, "app@n1.moved.test", :inet) ==
             {:ok, {127, 0, 0, 51}, 4370}
  end

  test "rev11 finding 3: an SRV record owned by another name makes hickory query its target" do
    dns =
      start_dns(fn
        # Only a foreign-owned record: the answer for this service has no SRV record of its own.
        "svc.chase.test", :srv ->
          {[{:srv, "unrelated.other", 1, 1, 4002, "x.chase.other"}], [], ttl: 60}

        # hickory treats the SRV target like a CNAME target and asks SRV for it.
        "x.chase.other", :srv ->
          {[{:srv, "x.chase.other", 1, 1, 4003, "y.chase.other"}],
           [{:a, "y.chase.other", {127, 0, 0, 99}}], ttl: 60}

        _, _ ->
          nil
      end)

    vars = vars(dns, "srv")
    svc = topology(vars, "svc.chase.test", {:basename, "app"})
    result = poll(svc)
    srv_queries = for {_, _, name, :srv} <- ScriptedDns.log(dns), do: name
    # Nothing owned by svc.chase.test: no member, and no query for names nobody asked about.
    assert result.members == [], inspect({result, srv_queries})
  end

  test "rev11 finding 4: in srv mode the cached port is the service record's, not name.host's" do
    dns =
      start_dns(fn
        "_http._tcp.srvweb.test", :srv ->
          {[{:srv, "_http._tcp.srvweb.test", 1, 1, 8080, "w1.srvweb.test"}],
           [{:a, "w1.srvweb.test", {127, 0, 0, 21}}], ttl: 600}

        # What the epmd module asks in srv mode for node app@w1.srvweb.test.
        "app.w1.srvweb.test", :srv ->
          {[{:srv, "app.w1.srvweb.test", 1, 1, 4370, "w1.srvweb.test"}],
           [{:a, "w1.srvweb.test", {127, 0, 0, 21}}], ttl: 600}

        _, _ ->
          nil
      end)

    vars = vars(dns, "srv")
    engine = engine(vars)
    web = topology(vars, "_http._tcp.srvweb.test", {:basename, "app"})
    assert %{members: ["app@w1.srvweb.test"]} = poll(web)
    cached = Native.lookup_cached(engine, "app@w1.srvweb.test", :inet)
    own = resolve(engine, "app@w1.srvweb.test")
    assert cached == own
  end

  test "rev11 finding 3b: an SRV record in an A answer makes the epmd module's lookup use another name's address" do
    dns =
      start_dns(fn
        # The A answer for the node's host holds no A record of its own, only a stray SRV
        # record (owned by another name) whose target hickory then asks an A query for.
        "h.achase.test", :a ->
          {[{:srv, "unrelated.other", 1, 1, 1, "evil.achase.other"}], [], ttl: 60}

        "evil.achase.other", :a ->
          {[{:a, "evil.achase.other", {127, 0, 0, 88}}], [], ttl: 86_400}

        _, _ ->
          nil
      end)

    engine = engine(vars(dns, "static"))
    assert {:error, _reason, _message} = resolve(engine, "app@h.achase.test")
  end

  test "held up: a CNAME loop in an SRV answer fails the poll, without hanging" do
    dns =
      start_dns(fn
        "loop.cname.test", :srv ->
          {[{:cname, "loop.cname.test", "loop2.cname.test"},
            {:cname, "loop2.cname.test", "loop.cname.test"}], [], ttl: 60}

        "loop2.cname.test", :srv ->
          {[{:cname, "loop2.cname.test", "loop.cname.test"}], [], ttl: 60}

        _, _ ->
          nil
      end)

    loop = topology(vars(dns, "static"), "loop.cname.test", {:basename, "app"})
    result = poll(loop)
    assert result.members == []
  end
end
