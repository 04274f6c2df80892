defmodule DynamicSrv.EpmdTest do
  # The epmd callbacks called as plain functions in the (non-distributed) test VM.
  # async: false: DynamicSrv.Epmd keeps its engine in :persistent_term and reads the OS
  # environment, both global to the VM.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias DynamicSrv.Epmd
  alias DynamicSrv.Test.{DnsServer, Mesh, Peer, Ports}

  @vars ~w(ERL_DIST_PORT DYNAMIC_SRV_NAMESERVERS DYNAMIC_SRV_PORT_MODE
           DYNAMIC_SRV_LOOKUP_TIMEOUT_MS DYNAMIC_SRV_MIN_TTL_MS DYNAMIC_SRV_MAX_STALE_S)

  # Where DynamicSrv.Epmd keeps its state. Each test starts as a fresh boot would, with
  # neither key set; whatever was there before the test is put back afterwards.
  @state_keys [{DynamicSrv.Epmd, :engine}, {DynamicSrv.Epmd, :registered}]

  setup do
    saved_env = Map.new(@vars, &{&1, System.get_env(&1)})
    saved_state = Map.new(@state_keys, &{&1, :persistent_term.get(&1, nil)})
    Enum.each(@vars, &System.delete_env/1)
    Enum.each(@state_keys, &:persistent_term.erase/1)

    on_exit(fn ->
      for {var, value} <- saved_env do
        if value, do: System.put_env(var, value), else: System.delete_env(var)
      end

      for {key, value} <- saved_state do
        if value, do: :persistent_term.put(key, value), else: :persistent_term.erase(key)
      end
    end)

    :ok
  end

  describe "start_link/0" do
    test "returns :ignore and prints nothing for a good srv-mode configuration" do
      {result, stderr} =
        with_io(:stderr, fn ->
          set_env(%{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()})
          Epmd.start_link()
        end)

      assert result == :ignore
      assert stderr == ""
    end

    test "returns :ignore in name mode without ERL_DIST_PORT" do
      set_env(%{
        "DYNAMIC_SRV_PORT_MODE" => "name",
        "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()
      })

      assert Epmd.start_link() == :ignore
    end

    test "returns :ignore in static mode with every optional variable set" do
      set_env(%{
        "DYNAMIC_SRV_PORT_MODE" => "static",
        "ERL_DIST_PORT" => "65535",
        "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:8600, [::1]:53,10.0.0.2",
        "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "10",
        "DYNAMIC_SRV_MIN_TTL_MS" => "0",
        "DYNAMIC_SRV_MAX_STALE_S" => "31536000"
      })

      assert Epmd.start_link() == :ignore
    end

    bad_configs = [
      {%{"ERL_DIST_PORT" => "abc"},
       ~s(ERL_DIST_PORT="abc" is not a valid port: expected an integer from 1 to 65535)},
      {%{"ERL_DIST_PORT" => ""},
       ~s(ERL_DIST_PORT="" is not a valid port: expected an integer from 1 to 65535)},
      {%{},
       "ERL_DIST_PORT is not set: DYNAMIC_SRV_PORT_MODE=srv needs this node's listen port, " <>
         "an integer from 1 to 65535 (or use DYNAMIC_SRV_PORT_MODE=name)"},
      {%{"DYNAMIC_SRV_PORT_MODE" => "static"},
       "ERL_DIST_PORT is not set: DYNAMIC_SRV_PORT_MODE=static needs this node's listen port, " <>
         "an integer from 1 to 65535 (or use DYNAMIC_SRV_PORT_MODE=name)"},
      {%{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => "dns.example:53"},
       ~s(DYNAMIC_SRV_NAMESERVERS="dns.example:53": "dns.example:53" is a host name: ) <>
         "nameservers must be IP addresses, e.g. 127.0.0.1:8600 or " <>
         "[::1]:53 (unset it to use /etc/resolv.conf)"},
      {%{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_PORT_MODE" => "dynamic"},
       ~s(DYNAMIC_SRV_PORT_MODE="dynamic" is not a port mode: expected srv, name or static)},
      {%{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "60001"},
       ~s(DYNAMIC_SRV_LOOKUP_TIMEOUT_MS="60001" is not valid: expected milliseconds from 10 to 60000)}
    ]

    for {{env, message}, index} <- Enum.with_index(bad_configs) do
      # The line is also printed, on the emulator's stderr (not through the IO system, so
      # not capturable here): test/integration/boot_refusal_test.exs checks it on real nodes.
      test "refuses with {:dynamic_srv, message}: #{inspect(env)} (#{index})" do
        env = unquote(Macro.escape(env))
        message = unquote(message)
        set_env(env)
        assert Epmd.start_link() == {:error, {:dynamic_srv, message}}
        # Nothing half-configured is left behind for the other callbacks.
        assert Epmd.address_please(~c"n1", ~c"127.0.0.1", :inet) == {:error, :not_configured}
      end
    end
  end

  describe "listen_port_please/2" do
    test "srv mode: ERL_DIST_PORT" do
      configure!(%{"ERL_DIST_PORT" => "4370"})
      assert Epmd.listen_port_please(~c"n1", ~c"dyn.test") == {:ok, 4370}
    end

    test "static mode: ERL_DIST_PORT" do
      configure!(%{"DYNAMIC_SRV_PORT_MODE" => "static", "ERL_DIST_PORT" => "4371"})
      assert Epmd.listen_port_please(~c"n1", ~c"127.0.0.1") == {:ok, 4371}
    end

    test "name mode: the name's trailing digits, ignoring ERL_DIST_PORT" do
      configure!(%{"DYNAMIC_SRV_PORT_MODE" => "name", "ERL_DIST_PORT" => "4370"})
      assert Epmd.listen_port_please(~c"app-4444", ~c"dyn.test") == {:ok, 4444}
      assert Epmd.listen_port_please(~c"app4445", ~c"dyn.test") == {:ok, 4445}
      assert Epmd.listen_port_please(~c"65535", ~c"dyn.test") == {:ok, 65535}
    end

    test "name mode: a name without digits refuses, naming the node" do
      configure!(%{"DYNAMIC_SRV_PORT_MODE" => "name"})

      message =
        ~s(node name "app@dyn.test" does not end in a port number: ) <>
          "DYNAMIC_SRV_PORT_MODE=name expects names like app-4370@host"

      assert Epmd.listen_port_please(~c"app", ~c"dyn.test") == {:error, {:dynamic_srv, message}}
    end

    test "release helper names rpc-XXXX-<node> and rem-XXXX-<node> get port 0" do
      configure!(%{"ERL_DIST_PORT" => "4370"})
      assert Epmd.listen_port_please(~c"rpc-1a2b-app", ~c"dyn.test") == {:ok, 0}
      assert Epmd.listen_port_please(~c"rem-00ff-app", ~c"dyn.test") == {:ok, 0}
    end

    test "release helper names get port 0 in name mode too, although they end in digits" do
      configure!(%{"DYNAMIC_SRV_PORT_MODE" => "name"})
      assert Epmd.listen_port_please(~c"rpc-1a2b-app-4370", ~c"dyn.test") == {:ok, 0}
    end

    test "names that only look like helpers get ERL_DIST_PORT" do
      configure!(%{"ERL_DIST_PORT" => "4370"})

      for name <- ~w(rpc-gateway rpc-1a2b rpc-1A2B-app rpc-1a2-app rem-zzzz-app rpc1a2b-app) do
        assert Epmd.listen_port_please(String.to_charlist(name), ~c"dyn.test") == {:ok, 4370},
               name
      end
    end
  end

  describe "register_node/2,3 and names/1" do
    test "register_node returns creation -1 for every driver and family" do
      configure!(%{"ERL_DIST_PORT" => "4370"})
      assert Epmd.register_node(~c"n1", 4370) == {:ok, -1}

      for driver_or_family <- [:inet_tcp, :inet6_tcp, :inet, :inet6] do
        assert Epmd.register_node(~c"n1", 4370, driver_or_family) == {:ok, -1}
      end
    end

    test "names/1 returns only this node's registered entry" do
      configure!(%{"ERL_DIST_PORT" => "4370"})
      assert Epmd.names(~c"dyn.test") == {:ok, []}

      assert Epmd.register_node(~c"n1", 4370, :inet_tcp) == {:ok, -1}
      assert Epmd.names(~c"dyn.test") == {:ok, [{~c"n1", 4370}]}

      # A release helper registers the OS-assigned port it actually listens on.
      assert Epmd.register_node("rpc-1a2b-n1", 41234, :inet6) == {:ok, -1}
      assert Epmd.names(~c"dyn.test") == {:ok, [{~c"rpc-1a2b-n1", 41234}]}
    end
  end

  describe "address_please/3 and port_please/2 without DNS" do
    test "static mode with an IPv4 literal host: that address and ERL_DIST_PORT" do
      configure!(%{
        "DYNAMIC_SRV_PORT_MODE" => "static",
        "ERL_DIST_PORT" => "4370",
        "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()
      })

      assert Epmd.address_please(~c"n1", ~c"127.0.0.5", :inet) == {:ok, {127, 0, 0, 5}, 4370, 6}
    end

    test "static mode with an IPv6 literal host and :inet6: an 8-tuple" do
      configure!(%{
        "DYNAMIC_SRV_PORT_MODE" => "static",
        "ERL_DIST_PORT" => "4370",
        "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()
      })

      assert Epmd.address_please(~c"n1", ~c"::1", :inet6) ==
               {:ok, {0, 0, 0, 0, 0, 0, 0, 1}, 4370, 6}

      assert Epmd.address_please(~c"n1", ~c"fd00::5", :inet6) ==
               {:ok, {0xFD00, 0, 0, 0, 0, 0, 0, 5}, 4370, 6}
    end

    test "name mode with an IP literal host: the name's digits" do
      configure!(%{
        "DYNAMIC_SRV_PORT_MODE" => "name",
        "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()
      })

      assert Epmd.address_please(~c"app-4444", ~c"127.0.0.7", :inet) ==
               {:ok, {127, 0, 0, 7}, 4444, 6}

      assert Epmd.address_please(~c"app", ~c"127.0.0.7", :inet) ==
               {:error, :invalid_node_name}
    end

    test "a release helper reaches the node it serves on ERL_DIST_PORT, without SRV" do
      configure!(%{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()})
      assert Epmd.listen_port_please(~c"rpc-1a2b-app", ~c"127.0.0.1") == {:ok, 0}
      assert Epmd.address_please(~c"app", ~c"127.0.0.1", :inet) == {:ok, {127, 0, 0, 1}, 4370, 6}
    end

    test "port_please in static mode: ERL_DIST_PORT for any node" do
      configure!(%{"DYNAMIC_SRV_PORT_MODE" => "static", "ERL_DIST_PORT" => "4370"})
      assert Epmd.port_please(~c"n1", {127, 0, 0, 5}) == {:port, 4370, 6}
      assert Epmd.port_please(~c"other", {0, 0, 0, 0, 0, 0, 0, 1}, 5_000) == {:port, 4370, 6}
    end

    test "port_please in name mode: the name's digits, or :noport" do
      configure!(%{"DYNAMIC_SRV_PORT_MODE" => "name"})
      assert Epmd.port_please(~c"app-4444", {127, 0, 0, 5}) == {:port, 4444, 6}
      assert Epmd.port_please(~c"app", {127, 0, 0, 5}) == :noport
    end

    test "a bad configuration read lazily gives {:error, :not_configured}, silently" do
      set_env(%{"ERL_DIST_PORT" => "abc"})

      {result, stderr} =
        with_io(:stderr, fn -> Epmd.address_please(~c"n1", ~c"127.0.0.1", :inet) end)

      assert result == {:error, :not_configured}
      assert stderr == ""
      assert Epmd.port_please(~c"n1", {127, 0, 0, 1}) == :noport
    end
  end

  describe "address_please/3 in srv mode against dnsmasq" do
    setup do
      name = "u#{System.unique_integer([:positive])}"
      port = Ports.free()

      dns =
        DnsServer.start!(
          [
            {:srv, "#{name}.dyn.test", "#{name}-host.dyn.test", port},
            {:a, "#{name}-host.dyn.test", "127.0.0.9"}
          ],
          # Authoritative for dyn.test: unknown names get NXDOMAIN, not REFUSED.
          extra: ["--local=/dyn.test/"]
        )

      on_exit(fn -> stop_dns(dns) end)

      configure!(%{
        "ERL_DIST_PORT" => "4370",
        "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns)
      })

      %{dns: dns, name: name, port: port}
    end

    test "answers with the SRV port and the target's A address, then from the cache",
         %{dns: dns, name: name, port: port} do
      node_name = String.to_charlist(name)
      assert Epmd.address_please(node_name, ~c"dyn.test", :inet) == {:ok, {127, 0, 0, 9}, port, 6}

      srv_query = "query[SRV] #{name}.dyn.test from 127.0.0.1"
      assert Mesh.eventually(fn -> srv_query in DnsServer.queries(dns) end)
      # The address came from the SRV answer's additional section.
      refute Enum.any?(DnsServer.queries(dns), &String.starts_with?(&1, "query[A]"))
      before = length(DnsServer.queries(dns))

      assert Epmd.address_please(node_name, ~c"dyn.test", :inet) == {:ok, {127, 0, 0, 9}, port, 6}
      # Case-insensitive: the same cache entry.
      assert Epmd.address_please(String.upcase(name) |> String.to_charlist(), ~c"DYN.test", :inet) ==
               {:ok, {127, 0, 0, 9}, port, 6}

      Process.sleep(200)
      assert length(DnsServer.queries(dns)) == before, inspect(DnsServer.queries(dns))
    end

    test "port_please finds the port learnt from the SRV answer", %{name: name, port: port} do
      node_name = String.to_charlist(name)
      assert Epmd.port_please(node_name, {127, 0, 0, 9}) == :noport
      assert {:ok, {127, 0, 0, 9}, ^port, 6} = Epmd.address_please(node_name, ~c"dyn.test", :inet)
      assert Epmd.port_please(node_name, {127, 0, 0, 9}) == {:port, port, 6}
      # Same name at another address: unknown.
      assert Epmd.port_please(node_name, {127, 0, 0, 10}) == :noport
    end

    test "a name that is not in DNS gives {:error, :nxdomain}", %{dns: dns} do
      missing = "missing#{System.unique_integer([:positive])}"

      assert Epmd.address_please(String.to_charlist(missing), ~c"dyn.test", :inet) ==
               {:error, :nxdomain}

      assert Mesh.eventually(fn ->
               "query[SRV] #{missing}.dyn.test from 127.0.0.1" in DnsServer.queries(dns)
             end)

      assert Epmd.port_please(String.to_charlist(missing), {127, 0, 0, 9}) == :noport
    end

    test "an SRV target without an AAAA record gives {:error, :no_address} for :inet6",
         %{name: name} do
      assert Epmd.address_please(String.to_charlist(name), ~c"dyn.test", :inet6) ==
               {:error, :no_address}
    end
  end

  describe "address_please/3 when the nameserver does not answer" do
    test "gives up with :timeout or :unreachable and leaves no message behind" do
      configure!(%{
        "ERL_DIST_PORT" => "4370",
        "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:#{Ports.free()}",
        "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "200"
      })

      name = String.to_charlist("ghost#{System.unique_integer([:positive])}")
      assert {:error, reason} = Epmd.address_please(name, ~c"dyn.test", :inet)
      assert reason in [:timeout, :unreachable]

      Process.sleep(200 + 500)
      assert Process.info(self(), :message_queue_len) == {:message_queue_len, 0}
      assert Epmd.port_please(name, {127, 0, 0, 1}) == :noport
    end
  end

  defp configure!(env) do
    set_env(env)
    assert Epmd.start_link() == :ignore
  end

  defp set_env(env), do: Enum.each(env, fn {var, value} -> System.put_env(var, value) end)

  # DnsServer.stop/1 waits for the port's exit message, which only the port owner (the test
  # process, gone by the time on_exit runs) receives; it would wait 5 s each time. Stop the
  # OS process directly instead.
  defp stop_dns(%DnsServer{os_pid: os_pid, dir: dir}) do
    System.cmd("kill", ["-TERM", Integer.to_string(os_pid)], stderr_to_stdout: true)
    Mesh.eventually(fn -> not File.exists?("/proc/#{os_pid}") end, 100, 20)
    File.rm_rf(dir)
  end

  defp dead_nameserver, do: "127.0.0.1:#{Peer.dead_port()}"
end
