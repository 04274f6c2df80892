defmodule DynamicSrv.PackageTest do
  # What a Hex user gets, checked without building anything: the package metadata, the
  # README's links and pastes against the files the package ships, and each failure message
  # of the NIF compiler (`mix compile.dynamic_srv_native` run in a child `mix` with a fake
  # cargo or rustc). test/integration/packaging_test.exs builds and runs the package itself.
  use ExUnit.Case, async: true

  alias DynamicSrv.Test.Readme

  @root Path.expand("../..", __DIR__)

  defp files, do: Mix.Project.config()[:package][:files]

  test "package files exist and hold what a build from scratch needs, and no build output" do
    for path <- files(), do: assert(File.exists?(Path.join(@root, path)), path)

    for needed <- ~w(mix.exs mix lib Cargo.toml Cargo.lock CHANGELOG.md README.md LICENSE) do
      assert needed in files(), needed
    end

    refute Enum.any?(files(), &(&1 in ["priv", "target", "_build", "deps"]))
  end

  test "metadata: links, source_url, docs, a changelog entry for this version" do
    config = Mix.Project.config()
    version = config[:version]
    assert config[:source_url] =~ ~r{^https://}
    assert %{"GitHub" => _, "Changelog" => _} = config[:package][:links]
    assert config[:docs][:main] == "readme"
    assert config[:docs][:source_ref] == "v#{version}"
    for extra <- config[:docs][:extras], do: assert(extra in files(), extra)
    changelog = File.read!(Path.join(@root, "CHANGELOG.md"))
    assert changelog =~ "\n## #{version}\n"
    assert changelog =~ "\n## 0.1.0\n"
  end

  test "rust-version is declared and the crates inherit it" do
    assert File.read!(Path.join(@root, "Cargo.toml")) =~ ~r/^rust-version = "1\.\d+"$/m

    for crate <- ~w(dynamic_srv_dns dynamic_srv_nif) do
      assert File.read!(Path.join([@root, "native", crate, "Cargo.toml"])) =~
               "rust-version.workspace = true"
    end
  end

  test "the README links only to files the package ships (others by absolute URL)" do
    for link <- Readme.relative_links() do
      assert Enum.any?(files(), &(link == &1 or String.starts_with?(link, &1 <> "/"))),
             "README.md links to #{link}, which the package leaves out"
    end
  end

  test "the README's dependency lines: Hex matches this version, libcluster 3.4+" do
    version = Mix.Project.config()[:version]
    # `mix new` writes `defp deps`, and so does the README.
    {:defp, _, [{:deps, _, _}, [do: deps]]} = Code.string_to_quoted!(Readme.block!("deps-hex"))
    deps = Map.new(deps)
    assert Version.match?(version, deps[:libcluster_dynamic_srv])
    refute Version.match?("3.3.0", deps[:libcluster])
    assert Version.match?("3.5.0", deps[:libcluster])

    assert {:libcluster_dynamic_srv, [path: _]} =
             Code.string_to_quoted!(Readme.block!("deps-path"))
  end

  test "the README's iex recipe uses the port mode and naming of the Consul paste" do
    text = Readme.text()
    env = Readme.block!("env")
    assert env =~ "DYNAMIC_SRV_PORT_MODE=name"
    assert Readme.block!("runtime.exs") =~ ~s({:basename_port_ip, "app"})
    [iex] = Regex.run(~r/^```sh\nmix compile\n.*?^```/ms, text)
    assert iex =~ "DYNAMIC_SRV_PORT_MODE=name"
    assert iex =~ ~r/--name app-\d+@127\.0\.0\.1/
  end

  # From the .beam the compiler writes into the app's ebin when it runs (this test build's).
  test "mix help compile.dynamic_srv_native shows its docs" do
    {output, 0} = mix(["help", "compile.dynamic_srv_native"], [{"MIX_ENV", "test"}])
    assert output =~ "Builds the Rust NIF of `libcluster_dynamic_srv`"
    assert output =~ "CARGO_TARGET_DIR"
  end

  describe "the NIF compiler stops with a message saying what to do" do
    setup do
      tmp =
        Path.join(System.tmp_dir!(), "dynamic_srv_pkg_unit_#{System.unique_integer([:positive])}")

      File.mkdir_p!(tmp)
      on_exit(fn -> File.rm_rf(tmp) end)
      %{tmp_dir: tmp}
    end

    test "when DYNAMIC_SRV_CARGO is not an executable", %{tmp_dir: tmp} do
      for value <- ["/nope/cargo", Path.join(@root, "README.md"), "no-such-cargo-anywhere"] do
        {output, status} = compile_nif(tmp, [{"DYNAMIC_SRV_CARGO", value}])
        assert status != 0
        assert output =~ "DYNAMIC_SRV_CARGO=#{inspect(value)} is not an executable", output
      end
    end

    # PATH as it is, except that each directory holding a cargo is replaced by a copy made of
    # links to everything else in it (a distribution's cargo can share /usr/bin with erl).
    test "when there is no cargo", %{tmp_dir: tmp} do
      path =
        System.get_env("PATH")
        |> String.split(":")
        |> Enum.with_index()
        |> Enum.map_join(":", fn {dir, i} ->
          if File.exists?(Path.join(dir, "cargo")) do
            copy = Path.join(tmp, "path#{i}")
            File.mkdir_p!(copy)

            for entry <- File.ls!(dir),
                entry != "cargo",
                do: File.ln_s!(Path.join(dir, entry), Path.join(copy, entry))

            copy
          else
            dir
          end
        end)

      {output, status} = compile_nif(tmp, [{"PATH", path}, {"HOME", tmp}])
      assert status != 0
      assert output =~ "cargo not found", output
      assert output =~ "https://rustup.rs"
      assert output =~ "Rust 1.63"
    end

    test "when rustc is older than rust-version", %{tmp_dir: tmp} do
      rustc = script!(tmp, "rustc", ~s|echo "rustc 1.63.0 (4b91a6ea7 2022-08-08)"|)
      {output, status} = compile_nif(tmp, [{"RUSTC", rustc}])
      assert status != 0

      assert output =~
               ~r/needs Rust 1\.\d+ or newer to build its NIF, but #{rustc} is\s+rustc 1\.63\.0/,
             output

      assert output =~ "rustup update stable"
    end

    test "when the build fails, after cargo's own output", %{tmp_dir: tmp} do
      rustc = script!(tmp, "rustc", ~s|echo "rustc 1.95.0 (59807616e 2026-04-14)"|)

      cargo =
        script!(tmp, "cargo", """
        echo "   Compiling dynamic_srv_nif v0.1.0" >&2
        echo "error: could not compile dynamic_srv_nif" >&2
        exit 101
        """)

      {output, status} = compile_nif(tmp, [{"RUSTC", rustc}, {"DYNAMIC_SRV_CARGO", cargo}])
      assert status != 0
      [before, _] = String.split(output, "cargo build of the DynamicSrv NIF failed", parts: 2)
      assert before =~ "Compiling the DynamicSrv Rust NIF with cargo build --release"
      assert before =~ "The first build compiles about a hundred crates: a few minutes"
      assert before =~ "error: could not compile dynamic_srv_nif"
      assert output =~ "(exit status 101"
    end

    test "when cargo succeeds but leaves no library", %{tmp_dir: tmp} do
      rustc = script!(tmp, "rustc", ~s|echo "rustc 1.95.0 (59807616e 2026-04-14)"|)
      cargo = script!(tmp, "cargo", ~s|echo "    Finished release" >&2|)
      target = Path.join(tmp, "target")

      {output, status} =
        compile_nif(tmp, [
          {"RUSTC", rustc},
          {"DYNAMIC_SRV_CARGO", cargo},
          {"CARGO_TARGET_DIR", target}
        ])

      assert status != 0
      assert output =~ "the library it should have made is missing", output
      assert output =~ Path.join([target, "release", "libdynamic_srv_nif.so"])
    end

    test "a relative CARGO_TARGET_DIR is taken from where mix was run, not the package's sources",
         %{tmp_dir: tmp} do
      rustc = script!(tmp, "rustc", ~s|echo "rustc 1.95.0 (59807616e 2026-04-14)"|)
      cargo = script!(tmp, "cargo", ~s|echo "    Finished release" >&2|)

      # mix run from tmp (the project named by MIX_EXS), as a user's app compiles this package.
      {output, status} =
        mix(
          ["compile.dynamic_srv_native"],
          [
            {"MIX_BUILD_PATH", Path.join(tmp, "build")},
            {"MIX_EXS", Path.join(@root, "mix.exs")},
            {"RUSTC", rustc},
            {"DYNAMIC_SRV_CARGO", cargo},
            {"CARGO_TARGET_DIR", "reltarget"}
          ],
          tmp
        )

      assert status != 0
      assert output =~ Path.join([tmp, "reltarget", "release", "libdynamic_srv_nif.so"]), output
      refute File.exists?(Path.join(@root, "reltarget"))
    end
  end

  defp script!(dir, name, body) do
    path = Path.join(dir, name)
    File.write!(path, "#!/bin/sh\n" <> body <> "\n")
    File.chmod!(path, 0o755)
    path
  end

  # The compiler alone, in a child mix whose build goes to tmp (never this test build).
  defp compile_nif(tmp, env) do
    mix(["compile.dynamic_srv_native"], [{"MIX_BUILD_PATH", Path.join(tmp, "build")} | env])
  end

  defp mix(args, env, cd \\ @root) do
    set = for {var, _} <- env, do: var

    cleared =
      for var <- ~w(DYNAMIC_SRV_CARGO RUSTC CARGO_TARGET_DIR), var not in set, do: {var, nil}

    System.cmd(System.find_executable("mix"), args,
      cd: cd,
      env: cleared ++ env,
      stderr_to_stdout: true
    )
  end
end
