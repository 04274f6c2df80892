defmodule DynamicSrv.Integration.NifRobustnessTest do
  # The NIF under hostile conditions: a missing or broken shared library at boot, arguments of
  # the wrong type or absurd size at every NIF function, and lookups that fail by the hundred.
  # Boot cases start a real VM whose code path holds a copy of this application's ebin next
  # to a priv/native directory the test controls.
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Native
  alias DynamicSrv.Test.{DnsServer, Peer, Ports}

  @prefix "DynamicSrv.Epmd: distribution not started: cannot load the DynamicSrv NIF "
  @remedy "; rebuild it with `mix compile` (needs cargo)"

  describe "a bad shared library at boot" do
    @describetag timeout: 120_000

    test "missing: a clear refusal that says how to fix it" do
      {status, line, output} = boot_with_library(nil)
      assert status != 0, output
      assert line =~ ~r/^#{Regex.escape(@prefix)}\S+libdynamic_srv_nif\.so \(load_failed: /
      assert line =~ "No such file or directory", line
      assert String.ends_with?(line, @remedy), inspect(line)
    end

    test "garbage bytes instead of an ELF file" do
      {status, line, output} = boot_with_library(:crypto.strong_rand_bytes(4096))
      assert status != 0, output
      assert line =~ ~r/\(load_failed: .*(invalid ELF header|too short)/, line
      assert String.ends_with?(line, @remedy), inspect(line)
    end

    # dlopen of a truncated ELF file maps pages past its end: without the size check the VM
    # died of SIGBUS (exit status 135) with no message at all.
    test "truncated: the first 4 KB, or all but the last byte, of the real library" do
      real = File.read!(real_library())

      for size <- [4096, byte_size(real) - 1] do
        {status, line, output} = boot_with_library(binary_part(real, 0, size))
        assert status == 1, "exit status #{inspect(status)}:\n#{output}"

        assert line =~
                 ~r/^#{Regex.escape(@prefix)}.*\(truncated: the file is #{size} bytes, its ELF headers describe \d+\)/,
               line

        assert String.ends_with?(line, @remedy), inspect(line)
      end
    end

    test "another application's NIF under our name" do
      crypto = Path.join([to_string(:code.priv_dir(:crypto)), "lib", "crypto.so"])
      {status, line, output} = boot_with_library(File.read!(crypto))
      assert status != 0, output
      assert line =~ ~r/^#{Regex.escape(@prefix)}.*\((bad_lib|load_failed): /, line
      assert String.ends_with?(line, @remedy), inspect(line)
    end
  end

  describe "wrong arguments never crash the VM" do
    setup do
      :ok = Native.load()

      {:ok, engine} =
        Native.configure(%{"ERL_DIST_PORT" => "4370", "DYNAMIC_SRV_NAMESERVERS" => dead()})

      %{engine: engine}
    end

    test "every NIF function raises ArgumentError for wrong types", %{engine: engine} do
      huge = :binary.copy("a", 16 * 1024 * 1024)
      not_utf8 = <<255, 254>>
      # {dns_transport, removal_delay_ms, polling_interval_ms}
      tcp = {:tcp, 0, 5_000}

      calls = [
        fn -> Native.configure(:not_a_map) end,
        fn -> Native.configure(%{1 => 2}) end,
        fn -> Native.configure(%{"ERL_DIST_PORT" => not_utf8}) end,
        fn -> Native.lookup_timeout_ms(make_ref()) end,
        fn -> Native.listen_port(engine, 42) end,
        fn -> Native.listen_port(engine, not_utf8) end,
        fn -> Native.lookup_cached(engine, "a@b", :bogus) end,
        fn -> Native.lookup_cached(engine, ~c"a@b", :inet) end,
        fn -> Native.lookup_cached(:engine, "a@b", :inet) end,
        fn -> Native.lookup(engine, "a@b", :inet, :not_a_pid, make_ref()) end,
        fn -> Native.lookup(engine, "a@b", "inet", self(), make_ref()) end,
        fn -> Native.port_please(engine, "a", {1, 2, 3}) end,
        fn -> Native.port_please(engine, "a", {256, 0, 0, 1}) end,
        fn -> Native.port_please(engine, "a", {0, 0, 0, 0, 0, 0, 0, 70_000}) end,
        fn -> Native.port_please(engine, "a", "127.0.0.1") end,
        fn ->
          Native.topology_new(%{}, {"svc.test", :service_prefix, nil, :inet, -1, nil, tcp})
        end,
        fn -> Native.topology_new(%{}, {"svc.test", :made_up, nil, :inet, 1, nil, tcp}) end,
        fn ->
          Native.topology_new(
            %{},
            {"svc.test", :service_prefix, nil, :inet, 1, nil, {:quic, 0, 5_000}}
          )
        end,
        fn ->
          Native.topology_new(
            %{},
            {"svc.test", :service_prefix, nil, :inet, 1, nil, {:tcp, -5, 5_000}}
          )
        end,
        fn ->
          Native.topology_new(
            %{},
            {"svc.test", :service_prefix, nil, :inet, 1, nil, {:tcp, 0, -1}}
          )
        end,
        fn ->
          Native.topology_new(%{}, {"svc.test", :service_prefix, nil, :inet, 1, nil, {:tcp, 0}})
        end,
        fn -> Native.topology_new(%{}, {"svc.test", :service_prefix, nil, :inet, 1, nil}) end,
        fn -> Native.topology_new(%{}, {"svc.test", :service_prefix, nil, :inet}) end,
        fn -> Native.topology_new(%{}, :nope) end,
        fn -> Native.topology_poll(engine, self(), make_ref()) end,
        fn -> Native.topology_members(engine) end
      ]

      for {call, index} <- Enum.with_index(calls) do
        assert_raise ArgumentError, fn -> call.() end
        # Still alive, still answering.
        assert Native.variables() |> length() == 6, "after call #{index}"
      end

      # Absurd sizes are refused with a short message, not taken in whole.
      assert {:error, message} = Native.configure(%{"ERL_DIST_PORT" => huge})
      assert byte_size(message) < 200, message

      assert {:error, message} =
               Native.configure(%{"ERL_DIST_PORT" => "1", "DYNAMIC_SRV_NAMESERVERS" => huge})

      assert byte_size(message) < 500, message
      assert message =~ "(16777216 bytes) is not a nameserver address", message
      assert {:error, :invalid_node_name, _} = Native.lookup_cached(engine, huge, :inet)
      assert {:error, :invalid_node_name, _} = Native.lookup_cached(engine, "a@" <> huge, :inet)
      assert {:error, _} = Native.listen_port(engine, "a@" <> huge)
      assert :noport = Native.port_please(engine, huge, {127, 0, 0, 1})

      tag = make_ref()
      assert :ok = Native.lookup(engine, "n@" <> huge, :inet, self(), tag)
      assert_receive {^tag, {:error, :invalid_node_name, _}}, 10_000

      {:ok, topology} =
        Native.topology_new(%{}, {"svc.test", :service_prefix, nil, :inet, 4, "127.0.0.1:9", tcp})

      records = [{0, 0, 4370, huge}, {0, 0, 4370, "ok.svc.test"}, {1, 2, 3, "x\0y.svc.test"}]
      poll = Native.topology_apply(topology, records)
      assert poll.members == ["ok@svc.test"]
      assert length(poll.unmapped) == 2
      assert_raise ArgumentError, fn -> Native.topology_apply(topology, [{0, 0, 70_000, "a"}]) end
      assert_raise ArgumentError, fn -> Native.topology_apply(topology, [{0, 0, 1}]) end
      assert Native.topology_members(topology) == ["ok@svc.test"]
    end
  end

  describe "names that made the NIF panic" do
    test "a name ending in a multi-byte character, in name mode" do
      # Both paths reached a Rust panic (slicing inside 'é' / U+05BF) before the fix; rustler
      # turned it into an ErlangError (:nif_panicked) raised inside net_kernel's callback.
      :ok = Native.load()

      {:ok, engine} =
        Native.configure(%{
          "DYNAMIC_SRV_PORT_MODE" => "name",
          "DYNAMIC_SRV_NAMESERVERS" => dead()
        })

      assert Native.lookup_cached(engine, "app\u00e94370@127.0.0.1", :inet) ==
               {:ok, {127, 0, 0, 1}, 4370}

      assert Native.port_please(engine, "\u05bf", {127, 0, 0, 1}) == :noport
      assert Native.port_please(engine, "app\u00e94370", {127, 0, 0, 1}) == {:ok, 4370}
    end
  end

  describe "a Rust panic" do
    @describetag timeout: 300_000

    # No public path panics any more (the two found are fixed above), so this uses a debug
    # library built with the test-only cargo feature `panic-probe`, in a VM of its own.
    test "in a NIF call raises, in a DNS task replies with an error; VM and DNS thread live on" do
      {output, 0} =
        System.cmd("cargo", ~w(build -p dynamic_srv_nif --features panic-probe --quiet),
          cd: File.cwd!(),
          stderr_to_stdout: true
        )

      library = Path.join(File.cwd!(), "target/debug/libdynamic_srv_nif.so")
      assert File.regular?(library), output

      code = """
      ok = 'Elixir.DynamicSrv.Native':load(),
      Call = try 'Elixir.DynamicSrv.Native':panic_probe(call, self(), x) catch C:R -> {C, R} end,
      Tasks = [begin
                 Tag = make_ref(),
                 ok = 'Elixir.DynamicSrv.Native':panic_probe(task, self(), Tag),
                 receive {Tag, Reply} -> Reply after 10000 -> no_reply end
               end || _ <- lists:seq(1, 3)],
      {ok, E} = 'Elixir.DynamicSrv.Native':configure(\#{<<"DYNAMIC_SRV_PORT_MODE">> => <<"static">>,
                  <<"ERL_DIST_PORT">> => <<"4370">>, <<"DYNAMIC_SRV_NAMESERVERS">> => <<"127.0.0.1:9">>}),
      LTag = make_ref(),
      ok = 'Elixir.DynamicSrv.Native':lookup(E, <<"a@127.0.0.7">>, inet, self(), LTag),
      Lookup = receive {LTag, L} -> L after 10000 -> no_reply end,
      io:format("RESULT ~s~n", [base64:encode(term_to_binary({Call, Tasks, Lookup}))]),
      halt(0).
      """

      {status, output} = run_with_library(File.read!(library), code)
      assert status == 0, output
      [_, encoded] = Regex.run(~r/RESULT (\S+)/, output)
      {call, tasks, lookup} = :erlang.binary_to_term(Base.decode64!(encoded))

      assert call == {:error, :nif_panicked}
      assert length(tasks) == 3

      for reply <- tasks do
        assert {:error, :internal_error, message} = reply
        assert message =~ "panic probe: in the DNS task"
      end

      assert lookup == {:ok, {127, 0, 0, 7}, 4370}
    end
  end

  describe "failing lookups" do
    @describetag timeout: 120_000

    test "hundreds of failing lookup tasks leave the DNS thread working" do
      dns =
        DnsServer.start!(
          [{:srv, "good.fail.test", "t.fail.test", 4370}, {:a, "t.fail.test", "127.0.0.7"}],
          extra: ["--local=/fail.test/"]
        )

      on_exit(fn -> DnsServer.stop_and_clean(dns) end)
      :ok = Native.load()

      {:ok, engine} =
        Native.configure(%{
          "ERL_DIST_PORT" => "4370",
          "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
          "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "10000"
        })

      # A UDP socket this test holds and never reads: a server that is up and silent, on a
      # port no other process on the machine can take meanwhile.
      {:ok, silent} = :gen_udp.open(0, ip: {127, 0, 0, 1})
      on_exit(fn -> :gen_udp.close(silent) end)
      {:ok, silent_port} = :inet.port(silent)

      {:ok, dead_engine} =
        Native.configure(%{
          "ERL_DIST_PORT" => "4370",
          "DYNAMIC_SRV_NAMESERVERS" => "127.0.0.1:#{silent_port}",
          "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "100"
        })

      # NXDOMAIN from a live server, and timeouts from a silent one, all in flight at once.
      tags =
        for i <- 1..300 do
          tag = make_ref()

          {target, name} =
            if rem(i, 3) == 0,
              do: {dead_engine, "n#{i}@fail.test"},
              else: {engine, "missing#{i}@fail.test"}

          assert :ok = Native.lookup(target, name, :inet, self(), tag)
          tag
        end

      reasons =
        for tag <- tags do
          assert_receive {^tag, {:error, reason, message}}, 30_000
          assert is_binary(message)
          reason
        end

      {silent_reasons, live_reasons} =
        reasons |> Enum.with_index(1) |> Enum.split_with(fn {_, i} -> rem(i, 3) == 0 end)

      assert Enum.uniq(Enum.map(live_reasons, &elem(&1, 0))) == [:nxdomain]
      assert Enum.uniq(Enum.map(silent_reasons, &elem(&1, 0))) == [:timeout]
      assert length(silent_reasons) == 100

      tag = make_ref()
      assert :ok = Native.lookup(engine, "good@fail.test", :inet, self(), tag)
      assert_receive {^tag, {:ok, {127, 0, 0, 7}, 4370}}, 10_000
      assert {:ok, {127, 0, 0, 7}, 4370} = Native.lookup_cached(engine, "good@fail.test", :inet)
    end
  end

  # Boots `erl` with our epmd module from a copy of this application whose
  # priv/native/libdynamic_srv_nif.so holds `contents` (nil: no file). Returns the exit status,
  # our one stderr line, and the whole output.
  defp boot_with_library(contents) do
    root = Path.join(System.tmp_dir!(), "dynamic_srv_nif_#{System.unique_integer([:positive])}")
    app = Path.join([root, "lib", "libcluster_dynamic_srv-0.1.0"])
    on_exit(fn -> File.rm_rf!(root) end)
    File.mkdir_p!(Path.join([app, "priv", "native"]))

    File.cp_r!(
      Path.join(to_string(:code.lib_dir(:libcluster_dynamic_srv)), "ebin"),
      Path.join(app, "ebin")
    )

    if contents,
      do: File.write!(Path.join([app, "priv", "native", "libdynamic_srv_nif.so"]), contents)

    elixir = Path.join(to_string(:code.lib_dir(:elixir)), "ebin")

    {output, status} =
      System.cmd(
        System.find_executable("erl"),
        ~w(-noshell -start_epmd false -epmd_module Elixir.DynamicSrv.Epmd -name nif@127.0.0.1
           -setcookie robust -pa) ++ [Path.join(app, "ebin"), elixir, "-eval", "erlang:halt(0)."],
        env: [
          {"ERL_DIST_PORT", Integer.to_string(Ports.free())},
          {"DYNAMIC_SRV_NAMESERVERS", dead()},
          {"ERL_EPMD_PORT", Integer.to_string(Peer.dead_port())},
          {"ERL_CRASH_DUMP_SECONDS", "0"},
          {"ERL_LIBS", nil},
          {"ERL_AFLAGS", nil},
          {"ERL_FLAGS", nil},
          {"ERL_ZFLAGS", nil},
          {"ELIXIR_ERL_OPTIONS", nil}
        ],
        stderr_to_stdout: true
      )

    line =
      output
      |> String.split("\n")
      |> Enum.find("", &String.starts_with?(&1, "DynamicSrv.Epmd: "))
      # Written before the VM's I/O servers start, where the emulator ends lines with "\r\n".
      |> String.trim_trailing("\r")

    assert line =~ Path.join(app, "priv/native/libdynamic_srv_nif.so"),
           "the message must name the file it tried:\n#{output}"

    {status, line, output}
  end

  # Runs `code` (Erlang expressions) in a fresh VM whose copy of this application has
  # `contents` as its NIF library. Returns the exit status and the output.
  defp run_with_library(contents, code) do
    root = Path.join(System.tmp_dir!(), "dynamic_srv_nif_#{System.unique_integer([:positive])}")
    app = Path.join([root, "lib", "libcluster_dynamic_srv-0.1.0"])
    on_exit(fn -> File.rm_rf!(root) end)
    File.mkdir_p!(Path.join([app, "priv", "native"]))
    ebin = Path.join(to_string(:code.lib_dir(:libcluster_dynamic_srv)), "ebin")
    File.cp_r!(ebin, Path.join(app, "ebin"))
    File.write!(Path.join([app, "priv", "native", "libdynamic_srv_nif.so"]), contents)
    elixir = Path.join(to_string(:code.lib_dir(:elixir)), "ebin")

    {output, status} =
      System.cmd(
        System.find_executable("erl"),
        ["-noshell", "-pa", Path.join(app, "ebin"), elixir, "-eval", code],
        env: [{"ERL_LIBS", nil}, {"ERL_AFLAGS", nil}, {"ERL_FLAGS", nil}, {"ERL_ZFLAGS", nil}],
        stderr_to_stdout: true
      )

    {status, output}
  end

  defp real_library do
    Path.join([
      to_string(:code.priv_dir(:libcluster_dynamic_srv)),
      "native",
      "libdynamic_srv_nif.so"
    ])
  end

  defp dead, do: "127.0.0.1:#{Peer.dead_port()}"
end
