defmodule DynamicSrv.SharedCacheTest do
  # The address cache the epmd module and every topology share, fed by a real DNS server
  # that lies (ScriptedDns `{:forge, _}`): only names an answer owns are used, a topology
  # writes only the nodes it derives, with the port the epmd module would use, and never
  # redirects a node resolved on its own; a poll's target lookups are bounded and reused.
  # Drives the NIF directly (the epmd module's engine and a topology in this VM share the
  # cache, as they do in a node), so each test uses names no other test uses.
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

  defp topology(vars, service, naming, opts \\ []) do
    {kind, base} = naming
    removal_delay = Keyword.get(opts, :removal_delay, 0)
    max_nodes = Keyword.get(opts, :max_nodes, 2000)

    {:ok, topology} =
      Native.topology_new(
        vars,
        {service, kind, base, :inet, max_nodes, nil, {:tcp, removal_delay, 5_000}}
      )

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

  test "an answer for another service cannot redirect a node the epmd module resolved" do
    dns =
      start_dns(fn
        "h.legit.test", :a ->
          {[{:a, "h.legit.test", {127, 0, 0, 10}}], [], ttl: 60}

        # Unrelated service: its SRV target is the legit host, with a forged long-lived address.
        "evil.test", :srv ->
          {[{:srv, "evil.test", 1, 1, 9999, "h.legit.test"}],
           [{:a, "h.legit.test", {127, 0, 0, 66}}], ttl: 86_400}

        _, _ ->
          nil
      end)

    vars = vars(dns, "static")
    engine = engine(vars)
    assert resolve(engine, "app@h.legit.test") == {:ok, {127, 0, 0, 10}, 4370}

    evil = topology(vars, "evil.test", {:basename, "app"})
    assert %{members: ["app@h.legit.test"], failed: false} = poll(evil)

    assert Native.lookup_cached(engine, "app@h.legit.test", :inet) == {:ok, {127, 0, 0, 10}, 4370}
  end

  test "records owned by names the query did not ask for are not answers" do
    dns =
      start_dns(fn
        # An A answer whose record another name owns.
        "h.owner.test", :a ->
          {[{:a, "something.else", {127, 0, 0, 77}}], []}

        # One real instance, one SRV record owned by an unrelated name, and an additional
        # address for a name that is no target of this answer.
        "svc.owner.test", :srv ->
          {[
             {:srv, "svc.owner.test", 1, 1, 4001, "a.owner.test"},
             {:srv, "unrelated.other", 1, 1, 4002, "b.owner.test"}
           ],
           [
             {:a, "a.owner.test", {127, 0, 0, 31}},
             {:a, "b.owner.test", {127, 0, 0, 32}},
             {:a, "bystander.owner.test", {127, 0, 0, 33}}
           ], ttl: 60}

        _, _ ->
          nil
      end)

    vars = vars(dns, "srv")
    static_engine = engine(vars(dns, "static"))
    assert {:error, _reason, message} = resolve(static_engine, "app@h.owner.test")
    assert message =~ "h.owner.test"

    svc = topology(vars, "svc.owner.test", {:basename_port_ip, "app"})
    assert %{members: ["app-4001@127.0.0.31"], records: 1} = poll(svc)

    named = topology(vars(dns, "static"), "svc.owner.test", {:basename, "app"})
    assert %{members: ["app@a.owner.test"]} = poll(named)

    assert Native.lookup_cached(static_engine, "app@a.owner.test", :inet) ==
             {:ok, {127, 0, 0, 31}, 4370}

    assert Native.lookup_cached(static_engine, "app@bystander.owner.test", :inet) == :miss
  end

  test "what a topology cached for a node stops being fresh when the node leaves it" do
    registered = :atomics.new(1, [])
    :atomics.put(registered, 1, 1)

    dns =
      start_dns(fn
        "leave.test", :srv ->
          if :atomics.get(registered, 1) == 1 do
            {[
               {:srv, "leave.test", 1, 1, 4001, "n1.leave.test"},
               {:srv, "leave.test", 1, 1, 4001, "n2.leave.test"}
             ], [{:a, "n1.leave.test", {127, 0, 0, 41}}, {:a, "n2.leave.test", {127, 0, 0, 42}}],
             ttl: 86_400}
          else
            {[{:srv, "leave.test", 1, 1, 4001, "n2.leave.test"}],
             [{:a, "n2.leave.test", {127, 0, 0, 42}}], ttl: 86_400}
          end

        _, _ ->
          nil
      end)

    vars = vars(dns, "static")
    engine = engine(vars)
    leave = topology(vars, "leave.test", {:basename, "app"})
    assert %{members: ["app@n1.leave.test", "app@n2.leave.test"]} = poll(leave)

    assert Native.lookup_cached(engine, "app@n1.leave.test", :inet) ==
             {:ok, {127, 0, 0, 41}, 4370}

    :atomics.put(registered, 1, 0)
    # Removal needs two whole answers that agree.
    poll(leave)
    assert %{members: ["app@n2.leave.test"], left: ["app@n1.leave.test"]} = poll(leave)

    assert Native.lookup_cached(engine, "app@n1.leave.test", :inet) == :miss

    assert Native.lookup_cached(engine, "app@n2.leave.test", :inet) ==
             {:ok, {127, 0, 0, 42}, 4370}
  end

  test "static and name modes never take the port from the SRV record" do
    dns =
      start_dns(fn
        # A Kubernetes-style record of another port of the pods.
        "_http._tcp.web.test", :srv ->
          {[
             {:srv, "_http._tcp.web.test", 1, 1, 8080, "w1.web.test"},
             {:srv, "_http._tcp.web.test", 1, 1, 8080, "w2.web.test"}
           ], [{:a, "w1.web.test", {127, 0, 0, 21}}, {:a, "w2.web.test", {127, 0, 0, 22}}],
           ttl: 600}

        "_http._tcp.api.test", :srv ->
          {[{:srv, "_http._tcp.api.test", 1, 1, 8080, "a1.api.test"}],
           [{:a, "a1.api.test", {127, 0, 0, 23}}], ttl: 600}

        _, _ ->
          nil
      end)

    static = vars(dns, "static")
    web = topology(static, "_http._tcp.web.test", {:basename, "app"})
    assert %{members: ["app@w1.web.test", "app@w2.web.test"]} = poll(web)

    assert Native.lookup_cached(engine(static), "app@w1.web.test", :inet) ==
             {:ok, {127, 0, 0, 21}, 4370}

    # In name mode the port is the digits of the node name, whatever the record says.
    named = vars(dns, "name")
    api = topology(named, "_http._tcp.api.test", {:basename, "app4400"})
    assert %{members: ["app4400@a1.api.test"]} = poll(api)

    assert Native.lookup_cached(engine(named), "app4400@a1.api.test", :inet) ==
             {:ok, {127, 0, 0, 23}, 4400}
  end

  test "a poll of a thousand targets without addresses asks a few at a time, then reuses them" do
    targets = for k <- 1..1000, do: "t#{k}.bulk.test"

    dns =
      start_dns(fn
        "bulk.test", :srv ->
          {for({t, k} <- Enum.with_index(targets, 1), do: {:srv, "bulk.test", 1, 1, 5000 + k, t}),
           []}

        "t" <> _ = name, :a ->
          k = name |> String.trim_leading("t") |> String.split(".") |> hd() |> String.to_integer()
          {[{:a, name, {127, 1, div(k, 256), rem(k, 256)}}], [], ttl: 600}

        _, _ ->
          nil
      end)

    vars = vars(dns, "name")
    bulk = topology(vars, "bulk.test", {:basename_port_ip, "app"})
    first = poll(bulk)
    assert length(first.members) == 1000
    assert first.queries == 1001
    assert a_queries(dns) == 1000
    # The lookups ran a few at a time, not one socket per target all at once (578 open at
    # once before): 8 in flight, and the server counts a closed connection out only once it
    # has caught up with its mailbox, so it sees a few dozen (94 once in CI, under load).
    assert ScriptedDns.peak_connections(dns) < 200

    second = poll(bulk)
    assert length(second.members) == 1000
    assert second.queries == 1
    assert a_queries(dns) == 1000
  end

  test "an answer that agrees with the epmd module's entry does not take it over" do
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

    assert Native.lookup_cached(engine, "app@h.takeover.test", :inet) ==
             {:ok, {127, 0, 0, 10}, 4370}
  end

  test "an answer that agrees with the epmd module's entry does not keep it fresh" do
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

  test "a restarted topology updates what its predecessor cached" do
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

  test "an SRV answer with only another name's record lists nobody" do
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
    # Nothing owned by svc.chase.test: no member from what hickory found by asking the
    # stray record's target.
    assert result.members == [], inspect(result)
  end

  test "srv mode caches no port from a record that is not the node's own SRV name" do
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
    # The epmd module asks app.w1.srvweb.test, whose port (4370) the poll never saw.
    assert Native.lookup_cached(engine, "app@w1.srvweb.test", :inet) == :miss
    assert resolve(engine, "app@w1.srvweb.test") == {:ok, {127, 0, 0, 21}, 4370}
  end

  test "an A answer with only another name's SRV record gives no address" do
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

  test "a CNAME loop in an SRV answer lists nobody and does not hang" do
    dns =
      start_dns(fn
        "loop.cname.test", :srv ->
          {[
             {:cname, "loop.cname.test", "loop2.cname.test"},
             {:cname, "loop2.cname.test", "loop.cname.test"}
           ], [], ttl: 60}

        "loop2.cname.test", :srv ->
          {[{:cname, "loop2.cname.test", "loop.cname.test"}], [], ttl: 60}

        _, _ ->
          nil
      end)

    loop = topology(vars(dns, "static"), "loop.cname.test", {:basename, "app"})
    result = poll(loop)
    assert result.members == []
  end

  defp a_queries(dns), do: dns |> ScriptedDns.log() |> Enum.count(&match?({_, _, _, :a}, &1))
end
