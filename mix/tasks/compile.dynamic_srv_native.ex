defmodule Mix.Tasks.Compile.DynamicSrvNative do
  @shortdoc "Builds the DynamicSrv Rust NIF with cargo and installs it in the app's priv/"
  @moduledoc """
  Builds the Rust NIF of `libcluster_dynamic_srv` (`native/dynamic_srv_nif`) with
  `cargo build --release` and installs it as `priv/native/libdynamic_srv_nif.so` in the
  application's build directory (`Mix.Project.app_path/0`, e.g.
  `_build/prod/lib/libcluster_dynamic_srv/priv/native/`), where `DynamicSrv.Native` loads it
  (`:code.priv_dir/1`) and where `mix release` copies it from.

  It runs before the Elixir compiler (`compilers: [:dynamic_srv_native | Mix.compilers()]` in
  this package's `mix.exs`), also when the package is a dependency: nothing to configure.

  ## What it needs

  A Rust toolchain: `cargo` and `rustc` at least as new as the `rust-version` this package's
  `Cargo.toml` declares. Distribution packages are often older (Debian 12's `cargo` is
  Rust 1.63); install the current toolchain with rustup (https://rustup.rs):

      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh

  The version is checked before building, and each failure (no cargo, a rustc too old, a
  failed build, a build that produced no library) stops compilation with a message saying
  what to do.

  ## Where the build goes

  cargo's output goes to `_build/<MIX_ENV>/libcluster_dynamic_srv_cargo/` (under
  `MIX_BUILD_PATH` when set), never into the dependency's source tree. Set `CARGO_TARGET_DIR`
  to share one target directory between projects or environments (a relative path is taken
  from the directory `mix` was run in, never from this package's sources). The first build compiles about a hundred crates,
  a few minutes (about two on an idle 2-core machine; cargo's progress is shown); later ones
  rebuild only what changed, and a compile where nothing changed prints nothing.

  ## Environment

    * `DYNAMIC_SRV_CARGO` — the cargo to run (a path or a command on `PATH`). When set it must
      be an executable; otherwise `cargo` on `PATH`, then `~/.cargo/bin/cargo`.
    * `CARGO_TARGET_DIR` — cargo's target directory, see above.
    * `RUSTC` — the rustc cargo runs (cargo's own variable); the version check asks the same
      one. Otherwise the `rustc` next to the cargo found, then `rustc` on `PATH`.

  `mix clean` removes the installed library; the cargo target directory stays as a cache
  (`rm -rf _build` removes it too).
  """
  use Mix.Task.Compiler

  @crate "dynamic_srv_nif"
  @library "lib#{@crate}.so"

  # mix.exs loads this module with Code.require_file (it must exist before anything in the
  # package compiles), so it has no .beam file and `mix help compile.dynamic_srv_native` would
  # find no docs. Its bytecode is kept here and written to the app's ebin on each run.
  @after_compile __MODULE__

  @doc false
  def __after_compile__(_env, bytecode) do
    :persistent_term.put({__MODULE__, :bytecode}, bytecode)
  end

  @impl true
  def run(_args) do
    root = Path.dirname(Mix.Project.project_file())
    install_own_beam()

    cargo = find_cargo!()
    {rustc, version} = check_rustc!(cargo, root, required_rust_version(root))
    target_dir = target_dir()
    started = System.monotonic_time(:millisecond)
    built? = build!(cargo, root, target_dir, rustc, version)
    result = install!(target_dir)

    if built? do
      seconds = Float.round((System.monotonic_time(:millisecond) - started) / 1000, 1)
      Mix.shell().info("Rust NIF built in #{seconds} s, installed as #{installed_path()}")
    end

    result
  end

  @impl true
  def clean do
    File.rm(installed_path())
    :ok
  end

  @doc false
  def installed_path, do: Path.join([Mix.Project.app_path(), "priv", "native", @library])

  # --- cargo and rustc ------------------------------------------------------------------------

  defp find_cargo! do
    case System.get_env("DYNAMIC_SRV_CARGO") do
      value when value in [nil, ""] ->
        System.find_executable("cargo") || home_cargo() || no_cargo!()

      value ->
        executable(value) ||
          Mix.raise("""
          DYNAMIC_SRV_CARGO=#{inspect(value)} is not an executable: point it at a cargo binary \
          (e.g. #{Path.expand("~/.cargo/bin/cargo")}), or unset it to use the cargo on PATH.
          """)
    end
  end

  defp home_cargo do
    path = Path.expand("~/.cargo/bin/cargo")
    if executable_file?(path), do: path
  end

  # A name without a slash is looked up on PATH, like a shell does; a path must be an
  # executable regular file.
  defp executable(value) do
    if String.contains?(value, "/") do
      path = Path.expand(value)
      if executable_file?(path), do: path
    else
      System.find_executable(value)
    end
  end

  defp executable_file?(path) do
    case File.stat(path) do
      {:ok, %File.Stat{type: :regular, mode: mode}} -> Bitwise.band(mode, 0o111) != 0
      _ -> false
    end
  end

  defp no_cargo! do
    Mix.raise("""
    cargo not found: libcluster_dynamic_srv builds a Rust NIF and needs a Rust toolchain \
    (cargo and rustc #{required_rust_version(Path.dirname(Mix.Project.project_file())) || ""} \
    or newer). Install it with rustup (https://rustup.rs):

        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh

    then put ~/.cargo/bin on PATH (or open a new shell), or point DYNAMIC_SRV_CARGO at a cargo \
    binary. Distribution packages are often too old (Debian 12's cargo is Rust 1.63).
    """)
  end

  # The rustc cargo will run: RUSTC, else the one next to cargo (rustup's proxies and distro
  # packages both install them side by side; the build puts cargo's directory first on PATH),
  # else rustc on PATH.
  defp find_rustc(cargo) do
    sibling = Path.join(Path.dirname(cargo), "rustc")

    case System.get_env("RUSTC") do
      value when value in [nil, ""] ->
        if(executable_file?(sibling), do: sibling) || System.find_executable("rustc")

      value ->
        executable(value)
    end
  end

  defp check_rustc!(cargo, root, required) do
    rustc =
      find_rustc(cargo) ||
        Mix.raise("""
        found cargo (#{cargo}) but no rustc next to it or on PATH#{rustc_env_hint()}. Install \
        the Rust toolchain with rustup (https://rustup.rs).
        """)

    {output, status} =
      System.cmd(rustc, ["--version"], cd: root, stderr_to_stdout: true, env: path_env(cargo))

    version =
      case Regex.run(~r/^rustc (\d+)\.(\d+)\.(\d+)/, output) do
        [_ | parts] when status == 0 -> Enum.map(parts, &String.to_integer/1)
        _ -> Mix.raise("#{rustc} --version failed (exit status #{status}):\n#{output}")
      end

    if required && version < parse_version(required) do
      Mix.raise("""
      libcluster_dynamic_srv needs Rust #{required} or newer to build its NIF, but #{rustc} is \
      rustc #{Enum.join(version, ".")}.
      Install the current toolchain with rustup (https://rustup.rs):

          curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh

      (with rustup already installed: rustup update stable), then put ~/.cargo/bin first on \
      PATH or set DYNAMIC_SRV_CARGO=~/.cargo/bin/cargo. Distribution packages are often too \
      old (Debian 12's cargo is Rust 1.63).
      """)
    end

    {rustc, Enum.join(version, ".")}
  end

  defp rustc_env_hint do
    case System.get_env("RUSTC") do
      value when value in [nil, ""] -> ""
      value -> " (RUSTC=#{inspect(value)} is not an executable)"
    end
  end

  # `rust-version` of the Cargo workspace: the one place the minimum is written down.
  defp required_rust_version(root) do
    with {:ok, toml} <- File.read(Path.join(root, "Cargo.toml")),
         [_, version] <- Regex.run(~r/^rust-version\s*=\s*"([0-9.]+)"/m, toml) do
      version
    else
      _ -> nil
    end
  end

  defp parse_version(text) do
    parts = text |> String.split(".") |> Enum.map(&String.to_integer/1)
    parts ++ List.duplicate(0, 3 - length(parts))
  end

  # cargo's directory first on PATH, so cargo runs the rustc the version check asked.
  defp path_env(cargo) do
    [{"PATH", Enum.join([Path.dirname(cargo), System.get_env("PATH", "")], ":")}]
  end

  # --- build ----------------------------------------------------------------------------------

  defp target_dir do
    case System.get_env("CARGO_TARGET_DIR") do
      value when value in [nil, ""] ->
        Path.join(Mix.Project.build_path(), "libcluster_dynamic_srv_cargo")

      # Mix compiles a dependency from inside its own directory; the user meant the one their
      # shell was in ($PWD), so a relative path never lands in the dependency's sources.
      value ->
        Path.expand(value, System.get_env("PWD") || File.cwd!())
    end
  end

  defp build!(cargo, root, target_dir, rustc, version) do
    args = ["build", "--release", "-p", @crate, "--target-dir", target_dir]

    header = """
    Compiling the DynamicSrv Rust NIF with cargo build --release (rustc #{version}, #{rustc})
      into #{target_dir}
      The first build compiles about a hundred crates: a few minutes (about two on an idle \
    2-core machine); later builds only what changed.\
    """

    started = System.monotonic_time(:millisecond)

    port =
      Port.open({:spawn_executable, cargo}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 16_384},
        args: args,
        cd: root,
        env: Enum.map(path_env(cargo), fn {k, v} -> {to_charlist(k), to_charlist(v)} end)
      ])

    {status, shown?} = stream(port, header, false, "")
    seconds = Float.round((System.monotonic_time(:millisecond) - started) / 1000, 1)

    if status != 0 do
      unless shown?, do: Mix.shell().info(header)

      Mix.raise("""
      cargo build of the DynamicSrv NIF failed (exit status #{status}, after #{seconds} s): \
      see cargo's output above. It ran `#{cargo} #{Enum.join(args, " ")}` in #{root} with \
      rustc #{version}.
      """)
    end

    shown?
  end

  # Prints cargo's lines as they come, but only once cargo does something: a build with
  # nothing to do ("Finished ...") prints nothing, so `mix compile` stays quiet.
  defp stream(port, header, shown?, partial) do
    receive do
      {^port, {:data, {:noeol, chunk}}} ->
        stream(port, header, shown?, partial <> chunk)

      {^port, {:data, {:eol, chunk}}} ->
        line = partial <> chunk

        shown? =
          cond do
            shown? -> true
            line =~ ~r/^\s*Finished\b/ -> false
            true -> print_header(header)
          end

        if shown?, do: Mix.shell().info(line)
        stream(port, header, shown?, "")

      {^port, {:exit_status, status}} ->
        {status, shown?}
    end
  end

  defp print_header(header) do
    Mix.shell().info(header)
    true
  end

  # --- install --------------------------------------------------------------------------------

  defp install!(target_dir) do
    candidates =
      for ext <- ["so", "dylib"], do: Path.join([target_dir, "release", "lib#{@crate}.#{ext}"])

    built =
      Enum.find(candidates, &File.regular?/1) ||
        Mix.raise("""
        cargo build reported success, but the library it should have made is missing: \
        #{hd(candidates)}. If a cargo configuration sets `build.target`, the library lands in \
        #{target_dir}/<target triple>/release instead: unset it for this build, or copy the \
        library to #{installed_path()}.
        """)

    dest = installed_path()
    drop_dangling_priv_link()
    File.mkdir_p!(Path.dirname(dest))

    if File.read!(built) == (File.regular?(dest) && File.read!(dest)) do
      {:noop, []}
    else
      # Copy then rename, so a VM that has the old library loaded never sees a half-written
      # file (macOS's .dylib is installed as .so, the name load_nif/2 looks for).
      tmp = dest <> ".tmp"
      File.cp!(built, tmp)
      File.rename!(tmp, dest)
      {:ok, []}
    end
  end

  # Mix links _build/.../priv to the source's priv/ when the source has one; a checkout that
  # had priv/ and no longer does leaves the link dangling, and nothing could be installed.
  defp drop_dangling_priv_link do
    priv = Path.join(Mix.Project.app_path(), "priv")

    with {:ok, %File.Stat{type: :symlink}} <- File.lstat(priv),
         {:error, :enoent} <- File.stat(priv) do
      File.rm!(priv)
    end
  end

  defp install_own_beam do
    with bytecode when is_binary(bytecode) <- :persistent_term.get({__MODULE__, :bytecode}, nil) do
      path = Path.join(Mix.Project.compile_path(), "#{__MODULE__}.beam")

      unless File.read(path) == {:ok, bytecode} do
        File.mkdir_p!(Path.dirname(path))
        File.write!(path, bytecode)
      end
    end

    :ok
  end
end
