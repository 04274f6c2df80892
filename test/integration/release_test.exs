defmodule DynamicSrv.Integration.ReleaseTest do
  # The example app in examples/release, built with `MIX_ENV=prod mix release` and run the
  # way operators do: `bin/hello_cluster start` (embedded mode), then `rpc` (also with
  # `DynamicSrv.diagnose()`), `remote` (on a pty, as iex needs one for --remsh), `pid`,
  # `restart` and `stop` against the running node, with ERL_DIST_PORT set for every command.
  # Two nodes find each other through SRV records served by dnsmasq; ERL_EPMD_PORT points at
  # a dead port for every command, so any use of epmd would fail.
  use ExUnit.Case, async: false
  @moduletag :integration
  @moduletag :release
  @moduletag timeout: 900_000

  import DynamicSrv.Test.ReleaseCommands
  alias DynamicSrv.Test.{DnsServer, Fleet, Mesh, Ports}

  @example Path.expand("../../examples/release", __DIR__)
  @app "hello_cluster"
  @service "hello.test"
  @cookie "release_test_cookie"

  setup_all do
    tmp =
      Path.join(System.tmp_dir!(), "dynamic_srv_release_#{System.unique_integer([:positive])}")

    File.rm_rf!(tmp)
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf(tmp) end)

    rel = Path.join(tmp, "rel")
    {micros, _} = :timer.tc(fn -> build_release!(tmp, rel) end)
    IO.puts("\n[release] mix release (prod, path dependency): #{div(micros, 1000)} ms")

    %{tmp: tmp, bin: Path.join([rel, "bin", @app])}
  end

  # The build goes to a temporary directory (MIX_BUILD_PATH, --path), and MIX_HOME is an
  # empty directory: no Hex, no archives, nothing written into the repository. cargo reuses
  # this test build's target directory (the same sources, so nothing to rebuild);
  # test/integration/packaging_test.exs covers a build from scratch.
  defp build_release!(tmp, rel) do
    mix = System.find_executable("mix") || flunk("mix not found")

    env = [
      {"MIX_ENV", "prod"},
      {"MIX_BUILD_PATH", Path.join([tmp, "build", "prod"])},
      {"MIX_HOME", Path.join(tmp, "mix_home")},
      {"CARGO_TARGET_DIR",
       System.get_env("CARGO_TARGET_DIR") ||
         Path.join(Mix.Project.build_path(), "libcluster_dynamic_srv_cargo")}
    ]

    {output, status} =
      System.cmd(mix, ["release", "--path", rel, "--overwrite"],
        cd: @example,
        env: env,
        stderr_to_stdout: true
      )

    assert status == 0, "mix release failed:\n#{output}"
    assert File.regular?(Path.join([rel, "bin", @app])), output

    assert File.read!(Path.join([rel, "releases", "0.1.0", "vm.args"])) =~
             "-epmd_module Elixir.DynamicSrv.Epmd"

    assert File.regular?(
             Path.join([
               rel,
               "lib",
               "libcluster_dynamic_srv-#{Mix.Project.config()[:version]}",
               "priv",
               "native"
             ])
             |> Path.join("libdynamic_srv_nif.so")
           )
  end

  test "release nodes boot embedded, cluster through SRV records, and rpc/remote/pid/restart/stop work, all without epmd",
       %{tmp: tmp, bin: bin} do
    dead_epmd_port = Ports.free()
    [a, b] = nodes = node_specs(tmp, ["a", "b"])
    dns = DnsServer.start!(records(nodes), extra: ["--local=/#{@service}/"], tcp_workers: true)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    # Node a runs with the flags from the release's vm.args; node b with a plain vm.args and
    # the README's ELIXIR_ERL_OPTIONS instead, so both ways operators configure it are covered.
    plain_args = Path.join(tmp, "plain.vm.args")
    File.write!(plain_args, "## no epmd flags here: ELIXIR_ERL_OPTIONS carries them\n")

    env_a = release_env(a, dns, dead_epmd_port)

    env_b =
      Map.merge(release_env(b, dns, dead_epmd_port), %{
        "ELIXIR_ERL_OPTIONS" => "-start_epmd false -epmd_module Elixir.DynamicSrv.Epmd",
        "RELEASE_VM_ARGS" => plain_args,
        "RELEASE_REMOTE_VM_ARGS" => plain_args
      })

    started_at = System.monotonic_time(:millisecond)
    node_a = start_node!(bin, env_a)
    node_b = start_node!(bin, env_b)

    for {spec, node, env} <- [{a, node_a, env_a}, {b, node_b, env_b}] do
      status = await_status!(bin, env)
      assert status.node == spec.node
      assert status.code_mode == :embedded
      assert status.os_pid == Integer.to_string(node.os_pid)
    end

    IO.puts("[release] two nodes started, answering rpc: #{elapsed(started_at)} ms")

    # --- the cluster forms through DNS ---
    assert_cluster([{env_a, [b.node]}, {env_b, [a.node]}], bin)
    IO.puts("[release] start -> full mesh (2 nodes): #{elapsed(started_at)} ms")

    for env <- [env_a, env_b] do
      facts =
        rpc_term!(
          bin,
          env,
          "{:net_kernel.epmd_module(), Process.whereis(:erl_epmd), " <>
            ":init.get_argument(:start_epmd), :erlang.system_info(:creation)}"
        )

      assert {DynamicSrv.Epmd, nil, {:ok, [['false']]}, creation} = facts
      assert creation > 3
    end

    # --- diagnose over rpc, as the README tells operators: the text arrives on the helper ---
    {diagnosis, status} = run!(bin, ["rpc", "DynamicSrv.diagnose()"], env_a)
    IO.puts("[release] bin/#{@app} rpc \"DynamicSrv.diagnose()\":\n#{diagnosis}")
    assert status == 0, diagnosis
    diagnosed = String.split(diagnosis, "\n")
    has_line = fn text -> Enum.any?(diagnosed, &String.contains?(&1, text)) end

    for line <- [
          "DynamicSrv diagnosis of #{a.node}",
          ~s(ERL_DIST_PORT = #{a.port}    from the environment: ERL_DIST_PORT="#{a.port}"),
          "name: #{a.node} (running)",
          "port mode: srv; distribution port: #{a.port} (listening)",
          "nameservers: #{DnsServer.nameserver(dns)}",
          "=> connects to #{a.ip}:#{a.port}",
          "Service #{@service} (polled by DynamicSrv.Cluster over TCP, 2 current members):",
          "#{b.node} [connected, member in DNS]",
          "=> connects to #{b.ip}:#{b.port}",
          "No problems found."
        ] do
      assert has_line.(line), "expected a line containing\n  #{line}\nin:\n#{diagnosis}"
    end

    assert diagnosis =~ ~r/^Address cache \(\d+ entr(y|ies); DNS answering\):$/m
    # a reached b through the cache (kept warm by the poller; its state depends on timing).
    assert diagnosis =~ ~r/^  #{b.node} IPv4 #{Regex.escape("#{b.ip}:#{b.port}")}: /m
    refute diagnosis =~ "PROBLEM"
    # The rpc helper is hidden: it is not among the peers the node checks.
    refute diagnosis =~ ~r/rpc-[0-9a-f]{4}-/

    # --- rpc: a value computed on the node, with ERL_DIST_PORT set for the helper too ---
    {micros, value} = :timer.tc(fn -> rpc_term!(bin, env_a, "Enum.sum(1..100) * 7 + 1") end)
    assert value == 35_351
    IO.puts("[release] bin/#{@app} rpc round trip (boots a helper VM): #{div(micros, 1000)} ms")

    # The node listens on its ERL_DIST_PORT; the helper, with the same variable, did not clash.
    assert rpc_term!(bin, env_b, "{node(), DynamicSrv.Epmd.names(nil)}") ==
             {b.node, {:ok, [{~c"b", b.port}]}}

    # --- pid: the OS pid of the running node ---
    for {node, env} <- [{node_a, env_a}, {node_b, env_b}] do
      {output, 0} = run!(bin, ["pid"], env)
      assert String.trim(output) == Integer.to_string(node.os_pid)
    end

    # --- remote: an IEx shell on the node, through a pty ---
    remote_output = remote_eval!(bin, env_a)
    refute remote_output =~ "limited shell"
    assert remote_output =~ "iex(#{a.node})"
    assert remote_output =~ "REMOTE #{a.node} #{Enum.sum(1..10)}"
    # Seen from the node: the shell's helper node, named as Elixir 1.14's script names it.
    assert remote_output =~ ~r/HIDDEN \[:"rem-[0-9a-f]{4}-a@hello\.test"\]/

    # --- restart: the node restarts in place and rejoins ---
    creation_before = rpc_term!(bin, env_a, ":erlang.system_info(:creation)")
    {_, 0} = run!(bin, ["restart"], env_a)

    assert Mesh.eventually(
             fn ->
               match?(
                 {:ok, c} when c != creation_before,
                 try_rpc_term(bin, env_a, ":erlang.system_info(:creation)")
               )
             end,
             120,
             500
           ),
           "node a did not come back after bin/#{@app} restart"

    assert_cluster([{env_a, [b.node]}, {env_b, [a.node]}], bin)
    assert rpc_term!(bin, env_a, "System.pid()") == Integer.to_string(node_a.os_pid)

    # --- nothing asked epmd: no helper, no node, no command ---
    assert {:error, :econnrefused} = :gen_tcp.connect({127, 0, 0, 1}, dead_epmd_port, [], 1_000)

    queries = DnsServer.queries(dns)
    assert Enum.any?(queries, &String.starts_with?(&1, "query[SRV] #{@service} "))
    # Nobody looked a helper up, not even the node after the remote shell quit.
    assert Enum.filter(queries, &(&1 =~ ~r/(rpc|rem)-[0-9a-f]{4}-/)) == []

    # A helper reaches its node over loopback on ERL_DIST_PORT, without DNS: rpc works with
    # the nameserver pointed at a dead port.
    no_dns = Map.put(env_b, "DYNAMIC_SRV_NAMESERVERS", "127.0.0.1:#{dead_epmd_port}")
    assert rpc_term!(bin, no_dns, "node()") == b.node

    # --- stop: the node exits, the other one notices ---
    stop_started = System.monotonic_time(:millisecond)
    {_, 0} = run!(bin, ["stop"], env_a)
    assert_exit(node_a, 0)
    IO.puts("[release] bin/#{@app} stop -> node exited: #{elapsed(stop_started)} ms")

    assert Mesh.eventually(
             fn -> try_rpc_term(bin, env_b, "Node.list()") == {:ok, []} end,
             60,
             500
           )

    {_, 0} = run!(bin, ["stop"], env_b)
    assert_exit(node_b, 0)

    # A command against a stopped node fails instead of hanging or reaching something else.
    {output, status} = run!(bin, ["pid"], env_a)
    assert status != 0, output

    assert {:error, :econnrefused} = :gen_tcp.connect({127, 0, 0, 1}, dead_epmd_port, [], 1_000)
  end

  # --- nodes and DNS ----------------------------------------------------------------------

  # Fleet specs under the release's service, each on its own loopback address and with its
  # own release tmp directory.
  defp node_specs(tmp, names) do
    for {spec, i} <- Enum.with_index(Fleet.specs(names, %{service: @service}), 1) do
      Map.merge(spec, %{
        node: Fleet.node_name(spec),
        target: Fleet.target(spec),
        ip: "127.0.0.#{i}",
        tmp: Path.join(tmp, "node_#{spec.name}")
      })
    end
  end

  # The service SRV lists every node (what DynamicSrv.Cluster polls); each node also has its
  # own SRV record name.service (what the epmd module asks for name@service), and an A record.
  defp records(nodes), do: Fleet.records(nodes)

  # Only what the README tells operators to set, plus the app's CLUSTER_SERVICE and a dead
  # ERL_EPMD_PORT. Variables a developer's shell may carry are cleared.
  defp release_env(spec, dns, dead_epmd_port) do
    cleared =
      for var <- ~w(ELIXIR_ERL_OPTIONS ERL_AFLAGS ERL_FLAGS ERL_ZFLAGS RELEASE_VM_ARGS
                    RELEASE_REMOTE_VM_ARGS RELEASE_MODE MIX_ENV DYNAMIC_SRV_PORT_MODE),
          into: %{},
          do: {var, nil}

    Map.merge(cleared, %{
      "RELEASE_DISTRIBUTION" => "name",
      "RELEASE_NODE" => Atom.to_string(spec.node),
      "RELEASE_COOKIE" => @cookie,
      "RELEASE_TMP" => spec.tmp,
      "ERL_DIST_PORT" => Integer.to_string(spec.port),
      "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
      "CLUSTER_SERVICE" => @service,
      "CLUSTER_POLLING_INTERVAL_MS" => "500",
      "ERL_EPMD_PORT" => Integer.to_string(dead_epmd_port)
    })
  end

  # --- the running nodes ------------------------------------------------------------------

  defp await_status!(bin, env) do
    result = fn -> try_rpc_term(bin, env, "HelloCluster.status()") end

    assert Mesh.eventually(fn -> match?({:ok, _}, result.()) end, 120, 500),
           "the node did not answer bin/#{@app} rpc: #{inspect(result.())}"

    {:ok, status} = result.()
    status
  end

  defp assert_cluster(expectations, bin) do
    for {env, expected} <- expectations do
      nodes = fn -> try_rpc_term(bin, env, "Enum.sort(Node.list())") end

      assert Mesh.eventually(fn -> nodes.() == {:ok, Enum.sort(expected)} end, 120, 500),
             "expected #{inspect(expected)}, node sees #{inspect(nodes.())}"
    end
  end

  defp elapsed(since), do: System.monotonic_time(:millisecond) - since
end
