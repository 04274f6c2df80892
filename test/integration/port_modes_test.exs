defmodule DynamicSrv.Integration.PortModesTest do
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{DnsServer, Mesh, Peer, Ports}

  defp start_dns!(records) do
    dns = DnsServer.start!(records)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)
    dns
  end

  defp start_peer!(name, env, opts \\ []) do
    peer = Peer.start!(name, env, opts)
    on_exit(fn -> Peer.stop(peer) end)
    peer
  end

  defp registered_port(peer) do
    {:ok, [{_name, port}]} = Peer.call(peer, DynamicSrv.Epmd, :names, [~c"localhost"])
    port
  end

  test "name mode: each node listens on the digits of its name, found with no ERL_DIST_PORT" do
    dns = start_dns!([{:a, "nodes.dyn.test", "127.0.0.1"}])
    ports = for _ <- 1..3, do: Ports.free()

    peers =
      for port <- ports do
        start_peer!("app-#{port}@nodes.dyn.test", %{
          "DYNAMIC_SRV_PORT_MODE" => "name",
          "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns)
        })
      end

    Mesh.connect_and_assert_full_mesh(peers)

    for {peer, port} <- Enum.zip(peers, ports) do
      Mesh.assert_no_epmd(peer)
      assert registered_port(peer) == port
    end

    queries = DnsServer.queries(dns)
    assert Enum.any?(queries, &(&1 =~ "query[A] nodes.dyn.test"))
    refute Enum.any?(queries, &String.starts_with?(&1, "query[SRV]"))
  end

  test "static mode: every node on ERL_DIST_PORT, one loopback address each" do
    hosts = for i <- 1..3, do: {"s#{i}", "127.0.0.#{10 + i}"}
    dns = start_dns!(for {name, ip} <- hosts, do: {:a, "#{name}.static.test", ip})
    port = Ports.free()

    peers =
      for {name, ip} <- hosts do
        interface = ip |> String.split(".") |> Enum.join(",")

        start_peer!(
          "#{name}@#{name}.static.test",
          %{
            "DYNAMIC_SRV_PORT_MODE" => "static",
            "ERL_DIST_PORT" => Integer.to_string(port),
            "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns)
          },
          erl_args: ["-kernel", "inet_dist_use_interface", "{#{interface}}"]
        )
      end

    Mesh.connect_and_assert_full_mesh(peers)

    for peer <- peers do
      Mesh.assert_no_epmd(peer)
      assert registered_port(peer) == port
    end

    refute Enum.any?(DnsServer.queries(dns), &String.starts_with?(&1, "query[SRV]"))
  end

  describe "release helper nodes" do
    setup do
      main_port = Ports.free()

      dns =
        start_dns!([
          {:srv, "main.dyn.test", "main-host.dyn.test", main_port},
          {:a, "main-host.dyn.test", "127.0.0.1"},
          # The service name's own address is some other instance, never the helper's node.
          {:a, "dyn.test", "127.0.0.99"}
        ])

      env = %{
        "ERL_DIST_PORT" => Integer.to_string(main_port),
        "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns)
      }

      main = start_peer!("main@dyn.test", env)
      %{dns: dns, env: env, main: main, main_port: main_port}
    end

    test "rpc-XXXX-<node> and rem-XXXX-<node> listen elsewhere and reach the node they serve",
         %{dns: dns, env: env, main: main, main_port: main_port} do
      assert registered_port(main) == main_port

      for helper_name <- ["rpc-1a2b-main@dyn.test", "rem-00ff-main@dyn.test"] do
        # Same environment as the main node, ERL_DIST_PORT included, as bin/app sets it.
        helper = start_peer!(helper_name, env, erl_args: ["-hidden"])
        helper_port = registered_port(helper)
        assert helper_port not in [0, main_port]

        assert Peer.call(helper, :erpc, :call, [main.name, :erlang, :node, []]) == main.name
        Mesh.assert_no_epmd(helper)
        Peer.stop(helper)
      end

      # The helpers reached main over loopback on ERL_DIST_PORT: no DNS at all, so
      # `bin/app rpc` works even while the node is missing from DNS (a failing health check).
      assert DnsServer.queries(dns) == []
    end

    test "a node merely named rpc-gateway is a normal node", %{dns: dns, env: env, main: main} do
      own_port = Ports.free()
      env = Map.put(env, "ERL_DIST_PORT", Integer.to_string(own_port))
      gateway = start_peer!("rpc-gateway@dyn.test", env)

      assert registered_port(gateway) == own_port
      assert Peer.call(gateway, Node, :connect, [main.name]) == true
      assert Enum.any?(DnsServer.queries(dns), &(&1 =~ "query[SRV] main.dyn.test"))
    end
  end
end
