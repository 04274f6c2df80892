defmodule DynamicSrv.Integration.BootRefusalTest do
  # Every case boots a real BEAM node (an OS process) with `-epmd_module Elixir.DynamicSrv.Epmd`
  # and a bad environment, and checks that distribution refuses to start: the VM exits with a
  # non-zero status and prints the exact one-line message on stderr. No DNS server is needed
  # for a refusal, so DYNAMIC_SRV_NAMESERVERS points at a loopback port where nothing listens.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{Peer, Ports}

  @prefix "DynamicSrv.Epmd: distribution not started: "

  @port_expectation "is not a valid port: expected an integer from 1 to 65535"
  @nameserver_expectation "is not a nameserver address: expected a comma-separated list of " <>
                            "ip:port, e.g. 127.0.0.1:8600 or [::1]:53 (unset it to use /etc/resolv.conf)"
  @needs_port "needs this node's listen port, an integer from 1 to 65535 " <>
                "(or use DYNAMIC_SRV_PORT_MODE=name)"
  @empty_entry "expected a comma-separated list of ip:port with no empty items, " <>
                 "e.g. 127.0.0.1:8600,[::1]:53 (unset it to use /etc/resolv.conf)"
  @host_name_expectation "is a host name: nameservers must be IP addresses, " <>
                           "e.g. 127.0.0.1:8600 or [::1]:53 (unset it to use /etc/resolv.conf)"
  @dns_chars "is not a valid DNS name: only letters, digits, '-' and '_' are allowed"

  @seventeen Enum.map_join(1..17, ",", &"127.0.0.#{&1}")

  @number_expectation %{
    "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "milliseconds from 10 to 60000",
    "DYNAMIC_SRV_MIN_TTL_MS" => "milliseconds from 0 to 86400000",
    "DYNAMIC_SRV_MAX_STALE_S" => "seconds from 0 to 31536000"
  }

  # Malformed values of every kind an operator or a template can produce, for every variable:
  # signs, overflow, hex, exponents, units, non-ASCII digits, control characters, whitespace,
  # empty values, runaway lengths. Each value is shown escaped (control characters never reach
  # the terminal raw) and cut after 64 characters.
  @hostile_values (for {value, shown} <- [
                         {"+4370", ~s("+4370")},
                         {"99999999999999999999", ~s("99999999999999999999")},
                         {"0x1112", ~s("0x1112")},
                         {"4370.0", ~s("4370.0")},
                         {"\uFF14\uFF13\uFF17\uFF10", ~s("\uFF14\uFF13\uFF17\uFF10")},
                         {"43\e[2J70", ~S("43\u{1b}[2J70")},
                         {"4370\t", ~S("4370\t")},
                         {"   ", ~s("   ")},
                         {String.duplicate("9", 5000),
                          ~s(") <> String.duplicate("9", 64) <> ~s("... \(5000 bytes\))}
                       ] do
                     {"ERL_DIST_PORT=#{String.slice(inspect(value), 0, 30)}", "refuse@dyn.test",
                      %{"ERL_DIST_PORT" => value}, [],
                      "ERL_DIST_PORT=#{shown} is not a valid port: expected an integer from 1 to 65535"}
                   end) ++
                    (for var <- ~w(DYNAMIC_SRV_LOOKUP_TIMEOUT_MS DYNAMIC_SRV_MIN_TTL_MS
                                DYNAMIC_SRV_MAX_STALE_S),
                         {value, shown} <- [
                           {"+100", ~s("+100")},
                           {"0x64", ~s("0x64")},
                           {"1e3", ~s("1e3")},
                           {"100 ", ~s("100 ")},
                           {"\u0661\u0660\u0660", ~s("\u0661\u0660\u0660")},
                           {"18446744073709551616", ~s("18446744073709551616")}
                         ] do
                       {"#{var}=#{inspect(value)}", "refuse@dyn.test",
                        %{"ERL_DIST_PORT" => "4370", var => value}, [],
                        "#{var}=#{shown} is not valid: expected #{@number_expectation[var]}"}
                     end) ++
                    (for var <- ~w(DYNAMIC_SRV_LOOKUP_TIMEOUT_MS DYNAMIC_SRV_MIN_TTL_MS
                                DYNAMIC_SRV_MAX_STALE_S) do
                       {"#{var} set but empty", "refuse@dyn.test", %{"ERL_DIST_PORT" => "4370"},
                        ["-env", var, ""],
                        ~s(#{var}="" is not valid: expected #{@number_expectation[var]})}
                     end) ++
                    [
                      {"DYNAMIC_SRV_PORT_MODE set but empty", "refuse@dyn.test",
                       %{"ERL_DIST_PORT" => "4370"}, ["-env", "DYNAMIC_SRV_PORT_MODE", ""],
                       ~s(DYNAMIC_SRV_PORT_MODE="" is not a port mode: expected srv, name or static)},
                      {"DYNAMIC_SRV_PORT_MODE in fullwidth letters", "refuse@dyn.test",
                       %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_PORT_MODE" => "\uFF53rv"}, [],
                       ~s(DYNAMIC_SRV_PORT_MODE="\uFF53rv" is not a port mode: expected srv, name or static)},
                      {"DYNAMIC_SRV_PORT_MODE with two modes", "refuse@dyn.test",
                       %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_PORT_MODE" => "srv,name"}, [],
                       ~s(DYNAMIC_SRV_PORT_MODE="srv,name" is not a port mode: expected srv, name or static)},
                      {"DYNAMIC_SRV_NAMESERVERS set but empty", "refuse@dyn.test",
                       %{"ERL_DIST_PORT" => "4370"}, ["-env", "DYNAMIC_SRV_NAMESERVERS", ""],
                       ~s(DYNAMIC_SRV_NAMESERVERS="" has an empty entry: #{@empty_entry})},
                      {"DYNAMIC_SRV_NAMESERVERS with a doubled comma", "refuse@dyn.test",
                       %{
                         "ERL_DIST_PORT" => "4370",
                         "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:53,,127.0.0.2:53"
                       }, [],
                       ~s(DYNAMIC_SRV_NAMESERVERS="127.0.0.1:53,,127.0.0.2:53" has an empty entry: #{@empty_entry})},
                      {"DYNAMIC_SRV_NAMESERVERS with an IPv6 address without brackets",
                       "refuse@dyn.test",
                       %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => "::1:53"}, [],
                       ~s(DYNAMIC_SRV_NAMESERVERS="::1:53": "::1:53" is an IPv6 address without ) <>
                         "brackets: write [address]:port, e.g. [::1]:53 or [fd00::1]:8600"},
                      {"DYNAMIC_SRV_NAMESERVERS with a container host name", "refuse@dyn.test",
                       %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => "consul:8600"},
                       [],
                       ~s(DYNAMIC_SRV_NAMESERVERS="consul:8600": "consul:8600" #{@host_name_expectation})},
                      {"DYNAMIC_SRV_NAMESERVERS with a signed port", "refuse@dyn.test",
                       %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:+53"},
                       [],
                       ~s(DYNAMIC_SRV_NAMESERVERS="127.0.0.1:+53": "127.0.0.1:+53" #{@nameserver_expectation})},
                      {"DYNAMIC_SRV_NAMESERVERS separated by semicolons", "refuse@dyn.test",
                       %{
                         "ERL_DIST_PORT" => "4370",
                         "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:53;127.0.0.2:53"
                       }, [],
                       ~s(DYNAMIC_SRV_NAMESERVERS="127.0.0.1:53;127.0.0.2:53": "127.0.0.1:53;127.0.0.2:53" #{@nameserver_expectation})},
                      {"DYNAMIC_SRV_NAMESERVERS with 17 entries", "refuse@dyn.test",
                       %{
                         "ERL_DIST_PORT" => "4370",
                         "DYNAMIC_SRV_NAMESERVERS" => @seventeen
                       }, [],
                       "DYNAMIC_SRV_NAMESERVERS=" <>
                         inspect(String.slice(@seventeen, 0, 64)) <>
                         "... (#{byte_size(@seventeen)} bytes) lists 17 nameservers: at most 16 are allowed"}
                    ]

  # OTP checks the name part of -name (letters, digits, '-', '_') but not the host, so a node
  # whose name no peer could resolve would start and stay alone.
  @hostile_node_names [
    {"srv mode, a host with '!'", "app@bad!host", %{"ERL_DIST_PORT" => "4370"}, [],
     ~s(node name "app@bad!host" cannot be looked up by its peers: "bad!host" #{@dns_chars})},
    {"static mode, a host with an empty label", "app@host..x",
     %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_PORT_MODE" => "static"}, [],
     ~s(node name "app@host..x" cannot be looked up by its peers: "host..x" is not a valid DNS name: it has an empty label)},
    {"name mode, a host starting with '-'", "app-4370@-host.x",
     %{"DYNAMIC_SRV_PORT_MODE" => "name"}, [],
     ~s(node name "app-4370@-host.x" cannot be looked up by its peers: "-host.x" is not a valid DNS name: a label starts or ends with '-')},
    {"srv mode, a name part longer than a DNS label", String.duplicate("a", 64) <> "@dyn.test",
     %{"ERL_DIST_PORT" => "4370"}, [],
     ~s(node name "#{String.duplicate("a", 64)}@dyn.test" cannot be looked up by its peers: ) <>
       ~s("#{String.duplicate("a", 64)}.dyn.test" is not a valid DNS name: a label is longer than 63 characters)}
  ]

  # {description, node name, environment, extra VM args, expected message}
  # Values are written in the environment exactly as an operator would set them.
  @cases ([
            {"ERL_DIST_PORT=abc", "refuse@dyn.test", %{"ERL_DIST_PORT" => "abc"}, [],
             ~s(ERL_DIST_PORT="abc" #{@port_expectation})},
            {"ERL_DIST_PORT=0", "refuse@dyn.test", %{"ERL_DIST_PORT" => "0"}, [],
             ~s(ERL_DIST_PORT="0" #{@port_expectation})},
            {"ERL_DIST_PORT=70000", "refuse@dyn.test", %{"ERL_DIST_PORT" => "70000"}, [],
             ~s(ERL_DIST_PORT="70000" #{@port_expectation})},
            {"ERL_DIST_PORT=-1", "refuse@dyn.test", %{"ERL_DIST_PORT" => "-1"}, [],
             ~s(ERL_DIST_PORT="-1" #{@port_expectation})},
            {"ERL_DIST_PORT=' 4370' (leading space)", "refuse@dyn.test",
             %{"ERL_DIST_PORT" => " 4370"}, [], ~s(ERL_DIST_PORT=" 4370" #{@port_expectation})},
            # An empty value in Port.open's :env *unsets* the variable (measured on OTP 25), so
            # the empty string is set through the emulator flag `-env ERL_DIST_PORT ""`, which
            # leaves the variable set and empty, as `export ERL_DIST_PORT=` does.
            {"ERL_DIST_PORT set but empty", "refuse@dyn.test", %{}, ["-env", "ERL_DIST_PORT", ""],
             ~s(ERL_DIST_PORT="" #{@port_expectation})},
            {"ERL_DIST_PORT unset in the default srv mode", "refuse@dyn.test", %{}, [],
             "ERL_DIST_PORT is not set: DYNAMIC_SRV_PORT_MODE=srv #{@needs_port}"},
            {"ERL_DIST_PORT unset in static mode", "refuse@dyn.test",
             %{"DYNAMIC_SRV_PORT_MODE" => "static"}, [],
             "ERL_DIST_PORT is not set: DYNAMIC_SRV_PORT_MODE=static #{@needs_port}"},
            {"ERL_DIST_PORT invalid in name mode (set, so still checked)", "app-4370@dyn.test",
             %{"DYNAMIC_SRV_PORT_MODE" => "name", "ERL_DIST_PORT" => "x"}, [],
             ~s(ERL_DIST_PORT="x" #{@port_expectation})},
            {"DYNAMIC_SRV_NAMESERVERS with a host name", "refuse@dyn.test",
             %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => "dns.example:53"}, [],
             ~s(DYNAMIC_SRV_NAMESERVERS="dns.example:53": "dns.example:53" #{@host_name_expectation})},
            {"DYNAMIC_SRV_NAMESERVERS with port 99999", "refuse@dyn.test",
             %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:99999"}, [],
             ~s(DYNAMIC_SRV_NAMESERVERS="127.0.0.1:99999": "127.0.0.1:99999" #{@nameserver_expectation})},
            {"DYNAMIC_SRV_NAMESERVERS with one bad entry in a list", "refuse@dyn.test",
             %{
               "ERL_DIST_PORT" => "4370",
               "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:8600,10.0.0.1:0"
             }, [],
             ~s(DYNAMIC_SRV_NAMESERVERS="127.0.0.1:8600,10.0.0.1:0": "10.0.0.1:0" #{@nameserver_expectation})},
            {"DYNAMIC_SRV_PORT_MODE=dynamic", "refuse@dyn.test",
             %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_PORT_MODE" => "dynamic"}, [],
             ~s(DYNAMIC_SRV_PORT_MODE="dynamic" is not a port mode: expected srv, name or static)},
            {"DYNAMIC_SRV_PORT_MODE=name without trailing digits", "app@dyn.test",
             %{"DYNAMIC_SRV_PORT_MODE" => "name"}, [],
             ~s(node name "app@dyn.test" does not end in a port number: ) <>
               "DYNAMIC_SRV_PORT_MODE=name expects names like app-4370@host"},
            {"DYNAMIC_SRV_PORT_MODE=name with digits past 65535", "app-70000@dyn.test",
             %{"DYNAMIC_SRV_PORT_MODE" => "name"}, [],
             ~s(node name "app-70000@dyn.test" ends in 70000, which is not a port from 1 to 65535)},
            {"DYNAMIC_SRV_PORT_MODE=name with port 0", "app-0@dyn.test",
             %{"DYNAMIC_SRV_PORT_MODE" => "name"}, [],
             ~s(node name "app-0@dyn.test" ends in 0, which is not a port from 1 to 65535)},
            {"DYNAMIC_SRV_LOOKUP_TIMEOUT_MS below the minimum", "refuse@dyn.test",
             %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "5"}, [],
             ~s(DYNAMIC_SRV_LOOKUP_TIMEOUT_MS="5" is not valid: expected milliseconds from 10 to 60000)},
            {"DYNAMIC_SRV_LOOKUP_TIMEOUT_MS not a number", "refuse@dyn.test",
             %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "3s"}, [],
             ~s(DYNAMIC_SRV_LOOKUP_TIMEOUT_MS="3s" is not valid: expected milliseconds from 10 to 60000)},
            {"DYNAMIC_SRV_MIN_TTL_MS negative", "refuse@dyn.test",
             %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_MIN_TTL_MS" => "-1"}, [],
             ~s(DYNAMIC_SRV_MIN_TTL_MS="-1" is not valid: expected milliseconds from 0 to 86400000)},
            {"DYNAMIC_SRV_MAX_STALE_S above the maximum", "refuse@dyn.test",
             %{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_MAX_STALE_S" => "31536001"}, [],
             ~s(DYNAMIC_SRV_MAX_STALE_S="31536001" is not valid: expected seconds from 0 to 31536000)}
          ] ++ @hostile_values ++ @hostile_node_names)
         |> Enum.with_index()

  for {{description, name, env, erl_args, message}, index} <- @cases do
    @tag timeout: 60_000
    test "refuses to start distribution: #{description} (#{index})" do
      # Crash dumps allowed (ERL_CRASH_DUMP_SECONDS unset, as on a user's machine), in a
      # working directory of its own, with stderr apart from stdout.
      dir = fresh_dir(unquote(index))
      stderr_file = Path.join(dir, "stderr")

      {status, stdout} =
        Peer.boot_failure(
          unquote(name),
          Map.merge(
            %{"DYNAMIC_SRV_NAMESERVERS" => dead_nameserver(), "ERL_CRASH_DUMP_SECONDS" => nil},
            unquote(Macro.escape(env))
          ),
          erl_args: unquote(erl_args),
          cd: dir,
          stderr_to: stderr_file
        )

      stderr = File.read!(stderr_file)
      output = "stdout:\n#{stdout}\nstderr:\n#{stderr}"

      assert is_integer(status) and status != 0,
             "expected a non-zero exit status, got #{inspect(status)}:\n#{output}"

      expected = @prefix <> unquote(message)

      # Exactly one line, on stderr, whole (not inside another line: OTP 27+ start
      # standard_error before net_sup, where output through it interleaves with net_kernel's)
      # and valid UTF-8; nothing on stdout: no supervisor reports, no "Kernel pid terminated".
      # (erlang:display_string/1 ends lines with "\r\n" on OTP 25.)
      assert String.split(stderr, ~r/\r?\n/) == [expected, ""],
             "expected exactly the line\n  #{expected}\non stderr, got:\n#{output}"

      assert stdout == "", output
      assert String.valid?(stderr)
      refute File.exists?(Path.join(dir, "erl_crash.dump")), output
    end
  end

  # Only the VM's own boot (-name/-sname) is ended; Node.start/2 in a running VM gets the line
  # and the error, as any other failed start.
  test "Node.start/2 in a running VM gets the error and the VM stays up" do
    peer =
      Peer.start!("runtime@dyn.test", %{"DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()},
        dist: :none
      )

    on_exit(fn -> Peer.stop(peer) end)

    assert {:error, _} = Peer.call(peer, Node, :start, [:"runtime@dyn.test", :longnames])
    assert Peer.call(peer, Node, :self, []) == :nonode@nohost
  end

  describe "good configurations boot" do
    test "name mode takes the port from the name's digits, with no ERL_DIST_PORT and no DNS" do
      port = Ports.free()
      name = "app-#{port}@127.0.0.1"

      peer =
        Peer.start!(name, %{
          "DYNAMIC_SRV_PORT_MODE" => "name",
          "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()
        })

      on_exit(fn -> Peer.stop(peer) end)

      assert Peer.call(peer, Node, :self, []) == String.to_atom(name)

      assert Peer.call(peer, DynamicSrv.Epmd, :names, [~c"127.0.0.1"]) ==
               {:ok, [{String.to_charlist("app-#{port}"), port}]}
    end

    test "srv mode listens on ERL_DIST_PORT" do
      port = Ports.free()

      peer =
        Peer.start!("good@dyn.test", %{
          "ERL_DIST_PORT" => Integer.to_string(port),
          "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()
        })

      on_exit(fn -> Peer.stop(peer) end)

      assert Peer.call(peer, DynamicSrv.Epmd, :names, [~c"dyn.test"]) ==
               {:ok, [{~c"good", port}]}
    end

    test "a release helper name (rpc-XXXX-app) does not take ERL_DIST_PORT, which is busy" do
      {busy, port} = occupy_port()
      on_exit(fn -> :gen_tcp.close(busy) end)

      peer =
        Peer.start!("rpc-1a2b-app@dyn.test", %{
          "ERL_DIST_PORT" => Integer.to_string(port),
          "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()
        })

      on_exit(fn -> Peer.stop(peer) end)

      assert {:ok, [{~c"rpc-1a2b-app", listen_port}]} =
               Peer.call(peer, DynamicSrv.Epmd, :names, [~c"dyn.test"])

      assert is_integer(listen_port) and listen_port > 0
      assert listen_port != port
    end

    test "a real node named rpc-gateway is not a helper: it takes ERL_DIST_PORT (busy here)" do
      {busy, port} = occupy_port()
      on_exit(fn -> :gen_tcp.close(busy) end)

      {status, output} =
        Peer.boot_failure("rpc-gateway@dyn.test", %{
          "ERL_DIST_PORT" => Integer.to_string(port),
          "DYNAMIC_SRV_NAMESERVERS" => dead_nameserver()
        })

      assert is_integer(status) and status != 0
      assert output =~ "eaddrinuse", output
    end
  end

  # A loopback port with a listener on every interface, as a running node would hold it.
  defp occupy_port do
    port = Ports.free()
    {:ok, socket} = :gen_tcp.listen(port, ip: {0, 0, 0, 0}, reuseaddr: true)
    {socket, port}
  end

  defp fresh_dir(index) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "dsrv-boot-refusal-#{index}-#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end

  defp dead_nameserver, do: "127.0.0.1:#{Peer.dead_port()}"
end
