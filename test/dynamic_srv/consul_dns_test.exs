defmodule DynamicSrv.Test.ConsulDnsTest do
  # The Consul-behaving test server checked against Consul's rules (see
  # DynamicSrv.Test.ConsulDns.Answer for where each comes from), through OTP's resolver and,
  # where the header matters (TC), a raw UDP exchange.
  use ExUnit.Case, async: true

  import Bitwise

  alias DynamicSrv.Test.ConsulDns

  @name ~c"my-app.service.consul"

  setup do
    server = ConsulDns.start!(dc: "dc1")
    on_exit(fn -> ConsulDns.stop(server) end)
    %{server: server}
  end

  # n instances, instance k on its own address 127.0.0.k (k from 1), as Nomad registers them.
  defp register(server, n, opts \\ []) do
    for k <- 1..n do
      address = if opts[:shared], do: {127, 0, 0, 1}, else: {127, 0, div(k, 250), rem(k, 250) + 1}

      ConsulDns.register(server, "my-app", k, %{
        node: "node-#{k}",
        address: address,
        port: 4000 + k
      })
    end
  end

  defp resolve(server, name, type, opts \\ []) do
    ns = [{{127, 0, 0, 1}, server.port}]
    opts = [nameservers: [hd(ns)], retry: 1, timeout: 5_000] ++ opts
    {:ok, msg} = :inet_res.resolve(name, :in, type, opts)
    msg
  end

  defp section(msg, key), do: for(rr <- :inet_dns.msg(msg, key), do: Map.new(:inet_dns.rr(rr)))
  defp answers(msg), do: section(msg, :anlist)
  defp additional(msg), do: section(msg, :arlist)

  defp targets(msg), do: for(%{data: {_, _, _, target}} <- answers(msg), do: target)

  # A query over UDP with our own bytes, to see the header as sent (:inet_res retries a TC
  # answer over TCP). Returns the decoded reply and its size.
  defp raw_udp(server, name, qtype, edns_size \\ nil) do
    labels = for l <- String.split(name, "."), into: <<>>, do: <<byte_size(l), l::binary>>
    ar = if edns_size, do: 1, else: 0
    opt = if edns_size, do: <<0, 41::16, edns_size::16, 0::32, 0::16>>, else: <<>>

    packet =
      <<4242::16, 0x0100::16, 1::16, 0::16, 0::16, ar::16, labels::binary, 0, qtype::16, 1::16,
        opt::binary>>

    {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}, active: false])
    :ok = :gen_udp.send(socket, {127, 0, 0, 1}, server.port, packet)
    {:ok, {_, _, reply}} = :gen_udp.recv(socket, 0, 5_000)
    :gen_udp.close(socket)
    {decode!(reply), byte_size(reply)}
  end

  # The same over TCP (:inet_res.resolve/4 with usevc: true gives no answer on OTP 27+ when
  # the TC bit is set, which Consul does on TCP answers it cut to 65,523 bytes).
  defp raw_tcp(server, name, qtype) do
    labels = for l <- String.split(name, "."), into: <<>>, do: <<byte_size(l), l::binary>>

    packet =
      <<4243::16, 0x0100::16, 1::16, 0::16, 0::16, 0::16, labels::binary, 0, qtype::16, 1::16>>

    {:ok, socket} =
      :gen_tcp.connect({127, 0, 0, 1}, server.port, [:binary, packet: 2, active: false])

    :ok = :gen_tcp.send(socket, packet)
    {:ok, reply} = :gen_tcp.recv(socket, 0, 10_000)
    :gen_tcp.close(socket)
    decode!(reply)
  end

  # OTP 27+ refuses to decode a message with the TC bit (formerr); OTP 25 decodes it. Decode
  # it with the bit cleared, then put the bit back, so the tests read the same on both.
  defp decode!(<<id::16, flags::16, rest::binary>> = reply) do
    case :inet_dns.decode(reply) do
      {:ok, msg} ->
        msg

      {:error, :formerr} when (flags &&& 0x0200) != 0 ->
        {:ok, msg} = :inet_dns.decode(<<id::16, flags &&& ~~~0x0200::16, rest::binary>>)
        header = :inet_dns.make_header(:inet_dns.msg(msg, :header), :tc, true)
        :inet_dns.make_msg(msg, :header, header)
    end
  end

  defp tc?(msg), do: :inet_dns.header(:inet_dns.msg(msg, :header), :tc)

  describe "SRV over UDP" do
    test "without EDNS0: udp_answer_limit (3) answers, 512 bytes, additional for those targets",
         %{server: server} do
      register(server, 24)
      msg = resolve(server, @name, :srv)
      assert length(answers(msg)) == 3

      assert Enum.sort(for %{domain: d, type: :a} <- additional(msg), do: d) ==
               Enum.sort(targets(msg))

      assert {_, size} = raw_udp(server, "my-app.service.consul", 33)
      assert size <= 512

      # A higher limit still has to fit 512 bytes sized uncompressed: 5 SRV+A pairs take 546.
      ConsulDns.set_option(server, :udp_answer_limit, 5)
      assert length(answers(resolve(server, @name, :srv))) == 4
    end

    test "EDNS0 1232 (hickory): 19 of 24 instances on their own addresses, 26 sharing one", %{
      server: server
    } do
      register(server, 24)
      msg = resolve(server, @name, :srv, edns: 0, udp_payload_size: 1232)
      assert length(answers(msg)) == 19
      # syncExtra: one A per kept target, nothing else (the TXT records and OPT are gone).
      extra = additional(msg)
      assert Enum.all?(extra, &(&1.type == :a))
      assert Enum.sort(for r <- extra, do: r.domain) == Enum.sort(targets(msg))
      assert {_, size} = raw_udp(server, "my-app.service.consul", 33, 1232)
      assert size <= 1232

      server2 = ConsulDns.start!()
      on_exit(fn -> ConsulDns.stop(server2) end)
      register(server2, 30, shared: true)
      msg = resolve(server2, @name, :srv, edns: 0, udp_payload_size: 1232)
      assert length(answers(msg)) == 26
      assert [%{domain: ~c"7f000001.addr.dc1.consul", data: {127, 0, 0, 1}}] = additional(msg)
    end

    test "EDNS0 1232 with 50 instances, and 4096 with 24 and 50", %{server: server} do
      register(server, 24)
      # 24 fit in 4096 untrimmed: the node-meta TXT records (owned by the node name, two per
      # node by default) and the OPT record stay.
      msg = resolve(server, @name, :srv, edns: 0, udp_payload_size: 4096)
      assert length(answers(msg)) == 24
      extra = additional(msg)
      assert length(for %{type: :a} <- extra, do: 1) == 24
      txt = for %{type: :txt} = r <- extra, do: r
      assert length(txt) == 48

      assert Enum.any?(
               txt,
               &(&1.data == [~c"consul-network-segment="] and
                   &1.domain == ~c"node-7.node.dc1.consul")
             )

      assert Enum.any?(
               txt,
               &(&1.data == [~c"consul-version=1.18.0"] and
                   &1.domain == ~c"node-3.node.dc1.consul")
             )

      register(server, 50)
      assert length(answers(resolve(server, @name, :srv, edns: 0, udp_payload_size: 1232))) == 19
      # 50 answers fit in 4096 only once the TXT records are dropped: the size loop runs (and
      # strips the TXT and OPT records) but keeps every answer, which Consul does not count as
      # trimmed.
      msg = resolve(server, @name, :srv, edns: 0, udp_payload_size: 4096)
      assert length(answers(msg)) == 50
      assert Enum.all?(additional(msg), &(&1.type == :a))
      assert length(additional(msg)) == 50
    end

    test "TC only with enable_truncate, and only when something was trimmed", %{server: server} do
      register(server, 24)
      {msg, _} = raw_udp(server, "my-app.service.consul", 33)
      refute tc?(msg)
      {msg, _} = raw_udp(server, "my-app.service.consul", 33, 1232)
      refute tc?(msg)
      assert length(answers(msg)) == 19

      ConsulDns.set_option(server, :enable_truncate, true)
      {msg, _} = raw_udp(server, "my-app.service.consul", 33)
      assert tc?(msg)
      assert length(answers(msg)) == 3
      {msg, _} = raw_udp(server, "my-app.service.consul", 33, 1232)
      assert tc?(msg)
      {msg, _} = raw_udp(server, "my-app.service.consul", 33, 4096)
      refute tc?(msg)
      assert length(answers(msg)) == 24

      # Given TC, OTP 25's resolver asks again over TCP and gets every instance; OTP 27's
      # refuses the truncated answer outright (formerr) and asks nothing more.
      opts = [nameservers: [{{127, 0, 0, 1}, server.port}], retry: 1, timeout: 5_000]

      case :inet_res.resolve(@name, :in, :srv, opts) do
        {:ok, msg} -> assert length(answers(msg)) == 24
        {:error, :formerr} -> assert String.to_integer(System.otp_release()) >= 27
      end
    end

    test "a trimmed answer is counted in stats and log", %{server: server} do
      register(server, 24)
      resolve(server, @name, :srv, edns: 0, udp_payload_size: 1232)
      resolve(server, @name, :srv, usevc: true)
      stats = ConsulDns.stats(server)
      assert %{queries: 1, trimmed: 1, tc: 0, answers: %{{19, 24} => 1}} = stats[{:srv, :udp}]
      assert %{queries: 1, trimmed: 0, answers: %{{24, 24} => 1}} = stats[{:srv, :tcp}]

      assert [
               %{transport: :udp, name: "my-app.service.consul", edns: 1232, sent: 19, built: 24},
               %{transport: :tcp, sent: 24, trimmed: false}
             ] = ConsulDns.log(server)
    end
  end

  describe "SRV over TCP" do
    test "complete for 50 instances, with every A and TXT record", %{server: server} do
      register(server, 50)
      msg = resolve(server, @name, :srv, usevc: true)
      assert length(answers(msg)) == 50
      assert length(for %{type: :a} <- additional(msg), do: 1) == 50
      assert length(for %{type: :txt} <- additional(msg), do: 1) == 100
    end

    test "capped at 1,024 records, or fewer when 65,523 bytes come first", %{server: server} do
      # 1,100 instances sharing one address: the SRV records fit, so the cut to 1,024 alone
      # happens, which Consul does not count as trimmed (no TC even with enable_truncate),
      # and without TXT records nothing resyncs the additional section: it keeps one A per
      # instance built, 1,100 copies of the same record.
      register(server, 1100, shared: true)
      ConsulDns.set_option(server, :enable_truncate, true)
      ConsulDns.set_option(server, :node_meta_txt, false)
      msg = raw_tcp(server, "my-app.service.consul", 33)
      assert length(answers(msg)) == 1024
      refute tc?(msg)
      assert length(additional(msg)) == 1100

      # With the TXT records the message passes 65,523 bytes: that trim counts (TC set) and
      # resyncs the additional section to the one shared A record.
      ConsulDns.set_option(server, :node_meta_txt, true)
      msg = raw_tcp(server, "my-app.service.consul", 33)
      assert length(answers(msg)) == 1024
      assert tc?(msg)
      assert [%{domain: ~c"7f000001.addr.dc1.consul"}] = additional(msg)

      # One address each: compression pointers reach only the first 16 KiB (RFC 1035's 14-bit
      # offsets; miekg/dns stops adding names there too), so the later A records carry their
      # own first label and 997 instances fit, not 1,024.
      register(server, 1100)
      msg = raw_tcp(server, "my-app.service.consul", 33)
      assert length(answers(msg)) == 997
      assert tc?(msg)
      assert Enum.sort(for %{domain: d} <- additional(msg), do: d) == Enum.sort(targets(msg))
    end
  end

  describe "lookups" do
    test "instances are shuffled on every query", %{server: server} do
      register(server, 10)

      orders =
        for _ <- 1..10, do: targets(resolve(server, @name, :srv, edns: 0, udp_payload_size: 4096))

      assert orders |> Enum.uniq() |> length() > 1
      assert orders |> Enum.map(&Enum.sort/1) |> Enum.uniq() |> length() == 1
    end

    test "service name forms, SRV fields, .addr. targets and TTL 0", %{server: server} do
      ConsulDns.register(server, "my-app", "a", %{
        node: "node-5",
        address: {127, 0, 0, 5},
        port: 4370
      })

      for name <- [
            @name,
            ~c"my-app.service.dc1.consul",
            ~c"_my-app._tcp.service.consul",
            ~c"_my-app._tcp.consul"
          ] do
        msg = resolve(server, name, :srv)

        assert [%{domain: ^name, ttl: 0, data: {1, 1, 4370, ~c"7f000005.addr.dc1.consul"}}] =
                 answers(msg)

        assert [
                 %{domain: ~c"7f000005.addr.dc1.consul", type: :a, ttl: 0, data: {127, 0, 0, 5}}
                 | txt
               ] = additional(msg)

        assert [~c"node-5.node.dc1.consul", ~c"node-5.node.dc1.consul"] =
                 for(t <- txt, do: t.domain)
      end

      ConsulDns.set_option(server, :service_ttl, 30)
      assert [%{ttl: 30}] = answers(resolve(server, @name, :srv))
    end

    test "a service registered without an address points at the node name", %{server: server} do
      ConsulDns.register(server, "my-app", "a", %{
        node: "node-9",
        node_address: {127, 0, 0, 9},
        port: 4370
      })

      msg = resolve(server, @name, :srv)
      assert [%{data: {1, 1, 4370, ~c"node-9.node.dc1.consul"}}] = answers(msg)

      assert [%{domain: ~c"node-9.node.dc1.consul", type: :a, data: {127, 0, 0, 9}} | _txt] =
               additional(msg)
    end

    test "A on the service name: the addresses, trimmed to 3 without EDNS0", %{server: server} do
      register(server, 5)
      msg = resolve(server, @name, :a)
      assert length(answers(msg)) == 3
      assert [] == additional(msg)
      msg = resolve(server, @name, :a, edns: 0, udp_payload_size: 1232)

      assert Enum.sort(for r <- answers(msg), do: r.data) ==
               for(k <- 1..5, do: {127, 0, 0, k + 1})
    end

    test "node and .addr. names answer A", %{server: server} do
      ConsulDns.register(server, "my-app", "a", %{
        node: "node-5",
        address: {127, 0, 0, 5},
        port: 4370
      })

      msg = resolve(server, ~c"node-5.node.dc1.consul", :a)
      assert [%{data: {127, 0, 0, 5}, ttl: 0}] = answers(msg)
      assert [%{type: :txt}, %{type: :txt}] = additional(msg)

      assert [%{data: {127, 0, 0, 5}}] =
               answers(resolve(server, ~c"7f000005.addr.dc1.consul", :a))

      assert [%{data: {127, 0, 0, 5}}] = answers(resolve(server, ~c"7f000005.addr.consul", :a))
    end

    test "NXDOMAIN with the SOA in authority, for unknown services, nodes and datacenters", %{
      server: server
    } do
      register(server, 1)
      ns = [nameservers: [{{127, 0, 0, 1}, server.port}]]

      # :inet_res keeps only the rcode of an NXDOMAIN answer: the SOA is read from raw bytes.
      for name <- ["nope.service.consul", "nope.node.consul", "my-app.service.dc9.consul"] do
        assert {:error, :nxdomain} = :inet_res.resolve(String.to_charlist(name), :in, :srv, ns)
        {msg, _} = raw_udp(server, name, 33)
        assert :inet_dns.header(:inet_dns.msg(msg, :header), :rcode) == 3
        assert [%{type: :soa, domain: ~c"consul", ttl: 0, data: soa}] = section(msg, :nslist)
        assert {~c"ns.consul", ~c"hostmaster.consul", _serial, 3600, 600, 86400, 0} = soa
      end

      ConsulDns.deregister(server, "my-app", 1)
      assert {:error, :nxdomain} = :inet_res.resolve(@name, :in, :srv, ns)
    end
  end

  # Not a speed assertion: it shows the single server process keeps up with a fleet's polls and
  # prints the rate for the record.
  test "24 concurrent pollers are all answered", %{server: server} do
    register(server, 24)
    per_client = 100
    started = System.monotonic_time(:millisecond)

    results =
      1..24
      |> Task.async_stream(
        fn _ ->
          for _ <- 1..per_client,
              do: length(answers(resolve(server, @name, :srv, edns: 0, udp_payload_size: 1232)))
        end,
        max_concurrency: 24,
        timeout: 60_000
      )
      |> Enum.flat_map(fn {:ok, counts} -> counts end)

    elapsed = max(System.monotonic_time(:millisecond) - started, 1)
    assert results == List.duplicate(19, 24 * per_client)

    IO.puts(
      "ConsulDns: #{24 * per_client} SRV queries from 24 clients in #{elapsed} ms (#{div(24 * per_client * 1000, elapsed)}/s)"
    )
  end
end
