defmodule DynamicSrv.Integration.PackagingTest do
  # A new user's first hour, run as the README tells it, against the package as Hex ships it:
  #
  #   1. copy exactly the paths of `package[:files]` into a scratch directory (no priv/, no
  #      target/: what a Hex tarball holds), named as the README's path dependency expects;
  #   2. the README's `mix new my_app --sup`, its path dependency line, its
  #      config/runtime.exs (the Consul paste) and its lib/my_app/application.ex
  #      (`Cluster.Supervisor` among the children; libcluster itself cannot be fetched here,
  #      so the libcluster 3.5 double of test/fixtures/libcluster stands in for it);
  #   3. the README's `MIX_ENV=prod mix release`, once, with cargo building from scratch into
  #      the app's _build (the default) — or, when DYNAMIC_SRV_TEST_CARGO_TARGET_DIR is set,
  #      into that CARGO_TARGET_DIR, to iterate faster;
  #   4. three release nodes started with the README's command and the paste's environment,
  #      against dnsmasq serving the README's records (on a free port instead of 8600, and
  #      free distribution ports instead of 24001-24003); the README's rpc check, the full
  #      mesh made through `Cluster.Supervisor`, `bin/my_app remote` and `stop`, no epmd.
  use ExUnit.Case, async: false
  @moduletag :integration
  @moduletag :packaging
  @moduletag timeout: 1_200_000

  import DynamicSrv.Test.ReleaseCommands
  alias DynamicSrv.Test.{DnsServer, Mesh, Ports, Readme}

  @repo Path.expand("../..", __DIR__)
  @fixtures Path.expand("../fixtures/libcluster", __DIR__)
  @vsn Mix.Project.config()[:version]
  @nif "libdynamic_srv_nif.so"

  setup_all do
    tmp = Path.join(System.tmp_dir!(), "dynamic_srv_pkg_#{System.unique_integer([:positive])}")
    File.rm_rf!(tmp)
    File.mkdir_p!(tmp)
    on_exit(fn -> File.rm_rf(tmp) end)

    package = copy_package_files!(tmp)
    app = new_app!(tmp)
    build = release!(app)
    %{tmp: tmp, package: package, app: app, build: build}
  end

  # --- 1. the package's files -----------------------------------------------------------------

  defp copy_package_files!(tmp) do
    {:path, checkout} = Code.string_to_quoted!(Readme.block!("deps-path")) |> elem(1) |> hd()

    package = Path.expand(checkout, Path.join(tmp, "my_app"))

    for path <- Mix.Project.config()[:package][:files] do
      source = Path.join(@repo, path)
      dest = Path.join(package, path)
      File.mkdir_p!(Path.dirname(dest))
      if File.dir?(source), do: File.cp_r!(source, dest), else: File.cp!(source, dest)
    end

    refute File.exists?(Path.join(package, "priv"))
    refute File.exists?(Path.join(package, "target"))
    package
  end

  # --- 2. a fresh app, the README's pastes ----------------------------------------------------

  defp new_app!(tmp) do
    {output, 0} = sh!(Readme.block!("mix-new"), tmp, mix_env(tmp))
    app = Path.join(tmp, "my_app")
    assert File.regular?(Path.join(app, "lib/my_app/application.ex")), output

    # The path form of the dependency line, in mix new's deps list; the README's libcluster
    # line is replaced by the double's files.
    mix_exs = File.read!(Path.join(app, "mix.exs"))
    deps = ~r/(defp deps do\n\s*)\[.*?\]/s
    assert mix_exs =~ deps
    path_dep = Readme.block!("deps-path") |> String.trim()
    File.write!(Path.join(app, "mix.exs"), Regex.replace(deps, mix_exs, "\\1[#{path_dep}]"))

    double = Path.join(app, "lib/libcluster_double")
    File.mkdir_p!(double)

    for file <- Path.wildcard(Path.join(@fixtures, "*.ex")),
        do: File.cp!(file, Path.join(double, Path.basename(file)))

    File.mkdir_p!(Path.join(app, "config"))
    File.write!(Path.join(app, "config/runtime.exs"), Readme.block!("runtime.exs"))
    File.write!(Path.join(app, "lib/my_app/application.ex"), Readme.block!("application.ex"))
    app
  end

  # --- 3. the release, once -------------------------------------------------------------------

  defp release!(app) do
    release = Readme.block!("release") |> String.trim()
    assert release == "MIX_ENV=prod mix release"
    cargo_target = System.get_env("DYNAMIC_SRV_TEST_CARGO_TARGET_DIR")
    env = mix_env(Path.dirname(app)) ++ [{"CARGO_TARGET_DIR", cargo_target}]

    started = System.monotonic_time(:millisecond)
    {output, status} = sh!(release, app, env)
    seconds = Float.round((System.monotonic_time(:millisecond) - started) / 1000, 1)
    assert status == 0, "#{release} failed:\n#{output}"

    lines = String.split(output, "\n")
    compiled = Enum.filter(lines, &(&1 =~ ~r/^\s+Compiling \S+ v/))

    IO.puts("""

    [packaging] #{release} in a fresh app, package from `files:` only#{if cargo_target, do: " (CARGO_TARGET_DIR=#{cargo_target})", else: " (cargo from scratch, default target dir)"}: #{seconds} s, cargo compiled #{length(compiled)} crates
    [packaging] what the user sees (cargo's "Compiling" lines elided past the first three):
    #{user_view(lines)}\
    """)

    # What the user sees during the build: what it is doing, that it takes a while, progress.
    assert output =~ "Compiling the DynamicSrv Rust NIF with cargo build --release (rustc "
    assert output =~ "The first build compiles about a hundred crates: a few minutes"
    installed = "_build/prod/lib/libcluster_dynamic_srv/priv/native/#{@nif}"
    assert output =~ ~r/^Rust NIF built in [\d.]+ s, installed as .*#{Regex.escape(installed)}$/m
    assert output =~ ~r/^\s+Compiling dynamic_srv_nif v/m

    # Where the build went: the app's _build (or CARGO_TARGET_DIR), never the package's source.
    target = cargo_target || Path.join(app, "_build/prod/libcluster_dynamic_srv_cargo")
    assert output =~ "\n  into #{target}\n"
    assert File.regular?(Path.join([target, "release", @nif]))

    unless cargo_target do
      # From scratch: every dependency crate was compiled (rustler, hickory, tokio).
      for crate <- ~w(rustler hickory-resolver tokio) do
        assert Enum.any?(compiled, &(&1 =~ ~r/Compiling #{crate} v/)), crate
      end
    end

    package = Path.join(Path.dirname(app), "libcluster_dynamic_srv")
    refute File.exists?(Path.join(package, "target")), "cargo wrote into the package's sources"
    refute File.exists?(Path.join(package, "priv")), "the NIF went into the package's sources"

    %{output: output, seconds: seconds}
  end

  test "the release from the package's files carries the NIF; mix help documents the compiler",
       %{app: app} do
    lib = Path.join(app, "_build/prod/rel/my_app/lib/libcluster_dynamic_srv-#{@vsn}")

    files =
      for f <- Path.wildcard(Path.join(lib, "**"), match_dot: true),
          File.regular?(f),
          do: Path.relative_to(f, lib)

    IO.puts(
      "[packaging] _build/prod/rel/my_app/lib/libcluster_dynamic_srv-#{@vsn}/:\n  " <>
        Enum.join(Enum.sort(files), "\n  ")
    )

    assert "priv/native/#{@nif}" in files
    assert "ebin/libcluster_dynamic_srv.app" in files
    assert "ebin/Elixir.DynamicSrv.Epmd.beam" in files
    assert DynamicSrv.Native.LibraryFile.check(Path.join(lib, "priv/native/#{@nif}")) == :ok

    # Nothing else of the build: only ebin/ and priv/native/ in the release.
    assert Enum.all?(files, &(String.starts_with?(&1, "ebin/") or &1 == "priv/native/#{@nif}")),
           inspect(files)

    {output, 0} =
      sh!("MIX_ENV=prod mix help compile.dynamic_srv_native", app, mix_env(Path.dirname(app)))

    assert output =~ "Builds the Rust NIF of `libcluster_dynamic_srv`"
  end

  test "three release nodes from the README cluster through Cluster.Supervisor; rpc, remote, stop; no epmd",
       %{app: app} do
    dead_epmd_port = Ports.free()

    # --- DNS: the README's records, on free ports ---
    {records, readme_ports, readme_flags} = readme_dns()
    ports = for _ <- readme_ports, do: Ports.free()
    port_of = Map.new(Enum.zip(readme_ports, ports))

    assert readme_flags -- ~w(--no-daemon --port=8600 --listen-address=127.0.0.1 --bind-interfaces
                               --no-resolv --no-hosts --local=/consul/) == []

    dns =
      DnsServer.start!(
        Enum.map(records, fn
          {:srv, name, target, port} -> {:srv, name, target, Map.fetch!(port_of, port)}
          a -> a
        end),
        extra: Enum.filter(readme_flags, &String.starts_with?(&1, "--local="))
      )

    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    # --- the nodes: the README's start block, the paste's environment ---
    {start_exports, start_command} = readme_start()
    bin = Path.join(app, "_build/prod/rel/my_app/bin/my_app")
    assert start_command == "_build/prod/rel/my_app/bin/my_app start"

    nodes =
      for readme_port <- readme_ports do
        port = Map.fetch!(port_of, readme_port)
        env = node_env(start_exports, port, dns, dead_epmd_port)
        name = String.to_atom(env["RELEASE_NODE"])
        assert name == :"app-#{port}@127.0.0.1"
        %{name: name, port: port, env: env, node: start_node!(bin, env)}
      end

    names = Enum.map(nodes, & &1.name)

    # --- the full mesh, made by the strategy under Cluster.Supervisor ---
    for n <- nodes do
      others = Enum.sort(names -- [n.name])
      list = fn -> try_rpc_term(bin, n.env, "Enum.sort(Node.list())") end

      assert Mesh.eventually(fn -> list.() == {:ok, others} end, 120, 500),
             "#{n.name}: expected #{inspect(others)}, got #{inspect(list.())}"
    end

    # The README's own check, as written (in the first node's environment).
    [check, expected] = Readme.block!("check") |> String.trim() |> String.split("\n")
    first = hd(nodes)
    {output, 0} = sh!(check, app, Enum.to_list(first.env))

    # The README's expected output names the others by their README ports.
    shown = fn text -> Enum.sort(for [n] <- Regex.scan(~r/app-\d+@[\d.]+/, text), do: n) end

    expected =
      for name <- shown.(expected) do
        [_, port] = Regex.run(~r/app-(\d+)@/, name)
        String.replace(name, port, Integer.to_string(port_of[String.to_integer(port)]))
      end

    assert shown.(output) == Enum.sort(expected)
    assert Enum.sort(expected) == Enum.map(Enum.sort(names -- [first.name]), &Atom.to_string/1)

    pairs =
      for n <- nodes do
        facts =
          rpc_term!(
            bin,
            n.env,
            "{Enum.map(Supervisor.which_children(MyApp.ClusterSupervisor), " <>
              "fn {id, pid, _, _} -> {id, Enum.sort(DynamicSrv.Cluster.members(pid))} end), " <>
              "Cluster.Strategy.calls(:connect_nodes), Cluster.Strategy.calls(:connected), " <>
              "{:net_kernel.epmd_module(), Process.whereis(:erl_epmd), :init.get_argument(:start_epmd)}}"
          )

        {children, asked, connected, epmd} = facts
        # The topology of config/runtime.exs, started by Cluster.Supervisor as libcluster does,
        # its members the three of DNS's answer. A node the others (and `global`) linked before its
        # first poll has nobody left to dial, so its own dials may be none.
        assert children == [{:app, Enum.sort(names)}]
        assert Enum.all?(asked, &(&1 in names))
        assert {DynamicSrv.Epmd, nil, {:ok, [['false']]}} = epmd
        for c <- connected, do: MapSet.new([n.name, c])
      end

    # The mesh was made through libcluster's Cluster.Strategy.connect_nodes/4: nothing else
    # dials at first. Once two nodes are connected, `global` (connect_all, on in a release)
    # may link the third before its strategy polls (seen on OTP 29), so not every pair need
    # have gone through it.
    all_pairs = for a <- names, b <- names, a < b, do: MapSet.new([a, b])
    through_strategy = MapSet.new(List.flatten(pairs))
    assert MapSet.size(through_strategy) > 0
    assert MapSet.subset?(through_strategy, MapSet.new(all_pairs))

    # --- remote: an IEx shell on the first node ---
    remote_output = remote_eval!(bin, first.env)
    assert remote_output =~ "iex(#{first.name})"
    assert remote_output =~ "REMOTE #{first.name} #{Enum.sum(1..10)}"

    # --- stop: the first node exits, the others see it go, then stop too ---
    {_, 0} = run!(bin, ["stop"], first.env)
    assert_exit(first.node, 0)
    [second, third] = tl(nodes)

    assert Mesh.eventually(
             fn -> try_rpc_term(bin, second.env, "Node.list()") == {:ok, [third.name]} end,
             60,
             500
           )

    for n <- [second, third] do
      {_, 0} = run!(bin, ["stop"], n.env)
      assert_exit(n.node, 0)
    end

    # --- nothing asked epmd: ERL_EPMD_PORT pointed every node and helper at a dead port ---
    assert {:error, :econnrefused} = :gen_tcp.connect({127, 0, 0, 1}, dead_epmd_port, [], 1_000)

    assert Enum.any?(
             DnsServer.queries(dns),
             &String.starts_with?(&1, "query[SRV] my-app.service.consul ")
           )
  end

  # The build's output up to the release summary, with cargo's Compiling lines past the
  # first three counted instead of shown.
  defp user_view(lines) do
    {compiling, _} = Enum.split_with(lines, &(&1 =~ ~r/^\s+Compiling \S+ v/))
    shown = MapSet.new(Enum.take(compiling, 3))

    lines
    |> Enum.take_while(&(not String.starts_with?(&1, "Release created")))
    |> Enum.chunk_by(&(&1 =~ ~r/^\s+Compiling \S+ v/ and not MapSet.member?(shown, &1)))
    |> Enum.map_join("\n", fn
      [first | _] = chunk ->
        if first =~ ~r/^\s+Compiling \S+ v/ and not MapSet.member?(shown, first),
          do: "   ... #{length(chunk)} more Compiling lines ...",
          else: Enum.join(chunk, "\n")
    end)
  end

  # --- README blocks --------------------------------------------------------------------------

  # {records, the ports of the SRV records in order, the other flags}
  defp readme_dns do
    args =
      Readme.block!("dns")
      |> String.replace("\\\n", " ")
      |> String.split()

    assert ["/usr/sbin/dnsmasq" | flags] = args

    {records, other} =
      Enum.reduce(flags, {[], []}, fn flag, {records, other} ->
        case flag do
          "--srv-host=" <> spec ->
            [name, target, port] = String.split(spec, ",")
            {[{:srv, name, target, String.to_integer(port)} | records], other}

          "--host-record=" <> spec ->
            [name, ip] = String.split(spec, ",")
            {[{:a, name, ip} | records], other}

          flag ->
            {records, [flag | other]}
        end
      end)

    records = Enum.reverse(records)
    ports = for {:srv, _, _, port} <- records, do: port
    assert length(ports) == 3
    {records, ports, Enum.reverse(other)}
  end

  # {the `export` line's assignments, the start command}
  defp readme_start do
    lines =
      Readme.block!("start")
      |> String.split("\n", trim: true)
      |> Enum.reject(&String.starts_with?(&1, "#"))

    assert ["export " <> exports, command] = lines
    {exports, command}
  end

  # The start block's exports (its NOMAD_PORT_dist swapped for this node's port), then the
  # paste's exports, evaluated by sh in an empty environment: the variables they set. The one
  # change: DYNAMIC_SRV_NAMESERVERS names this test's dnsmasq instead of the Consul agent.
  # Plus a dead ERL_EPMD_PORT, so any use of epmd would fail.
  defp node_env(start_exports, port, dns, dead_epmd_port) do
    exports = Regex.replace(~r/NOMAD_PORT_dist=\d+/, start_exports, "NOMAD_PORT_dist=#{port}")
    script = "export #{exports}\n#{Readme.block!("env")}\nenv"

    {output, 0} =
      System.cmd("env", ["-i", "PATH=/usr/bin:/bin", "sh", "-ec", script], stderr_to_stdout: true)

    set =
      for line <- String.split(output, "\n", trim: true),
          [var, value] = String.split(line, "=", parts: 2),
          var not in ~w(PATH PWD SHLVL _ OLDPWD),
          into: %{},
          do: {var, value}

    assert set["DYNAMIC_SRV_NAMESERVERS"] == "127.0.0.1:8600"

    cleared =
      for var <-
            ~w(ERL_AFLAGS ERL_FLAGS ERL_ZFLAGS ERL_LIBS RELEASE_VM_ARGS RELEASE_REMOTE_VM_ARGS
                    RELEASE_MODE RELEASE_COOKIE MIX_ENV ERL_DIST_PORT),
          into: %{},
          do: {var, nil}

    cleared
    |> Map.merge(set)
    |> Map.merge(%{
      "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
      "ERL_EPMD_PORT" => Integer.to_string(dead_epmd_port)
    })
  end

  # --- processes ------------------------------------------------------------------------------

  # Mix in an empty MIX_HOME (no Hex, no archives), none of this test run's Mix or cargo
  # settings.
  defp mix_env(tmp) do
    [
      {"MIX_HOME", Path.join(tmp, "mix_home")},
      {"MIX_ENV", nil},
      {"MIX_EXS", nil},
      {"MIX_BUILD_PATH", nil},
      {"MIX_DEPS_PATH", nil},
      {"MIX_TARGET", nil},
      {"CARGO_TARGET_DIR", nil},
      {"DYNAMIC_SRV_CARGO", nil},
      {"RUSTC", nil}
    ]
  end

  # A README command line, run by sh in `dir`; killed (by its pid) after 15 minutes.
  defp sh!(script, dir, env) do
    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-ec", script],
        cd: dir,
        env: port_env(env)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    collect_sh(port, os_pid, "", System.monotonic_time(:millisecond) + 900_000)
  end

  defp collect_sh(port, os_pid, acc, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, data}} -> collect_sh(port, os_pid, acc <> data, deadline)
      {^port, {:exit_status, status}} -> {acc, status}
    after
      remaining ->
        System.cmd("kill", ["-KILL", Integer.to_string(os_pid)], stderr_to_stdout: true)
        flunk("timed out; output so far:\n#{acc}")
    end
  end
end
