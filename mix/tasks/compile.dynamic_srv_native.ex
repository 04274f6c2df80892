defmodule Mix.Tasks.Compile.DynamicSrvNative do
  @shortdoc "Builds the DynamicSrv Rust NIF with cargo"
  @moduledoc """
  Builds `native/dynamic_srv_nif` with `cargo build --release` and installs the library as
  `priv/native/libdynamic_srv_nif.so`, where `DynamicSrv.Native` loads it.

  Cargo decides what is stale, so this runs cargo on every compile (a no-op build takes a
  fraction of a second). Set `DYNAMIC_SRV_CARGO` to use a specific cargo binary.
  """
  use Mix.Task.Compiler

  @crate "dynamic_srv_nif"

  @impl true
  def run(_args) do
    root = Path.expand("../..", __DIR__)
    cargo = find_cargo()

    Mix.shell().info("Compiling Rust NIF #{@crate} (cargo build --release)")

    {_, status} =
      System.cmd(cargo, ["build", "--release", "--quiet", "-p", @crate],
        cd: root,
        stderr_to_stdout: true,
        into: IO.stream(:stdio, :line)
      )

    if status != 0 do
      Mix.raise("cargo build of #{@crate} failed (exit status #{status}), see the output above")
    end

    install(root)
  end

  defp find_cargo do
    candidates = [
      System.get_env("DYNAMIC_SRV_CARGO"),
      System.find_executable("cargo"),
      Path.expand("~/.cargo/bin/cargo")
    ]

    Enum.find(candidates, &(&1 && File.regular?(&1))) ||
      Mix.raise("""
      cargo not found: libcluster_dynamic_srv builds a Rust NIF and needs a Rust toolchain.
      Install one with rustup (https://rustup.rs) or your OS packages (Debian: apt-get install cargo),
      or point DYNAMIC_SRV_CARGO at a cargo binary.
      """)
  end

  defp install(root) do
    built =
      Enum.find(
        [
          Path.join(root, "target/release/lib#{@crate}.so"),
          Path.join(root, "target/release/lib#{@crate}.dylib")
        ],
        &File.regular?/1
      ) || Mix.raise("cargo reported success but target/release/lib#{@crate}.so is missing")

    dest = Path.join(root, "priv/native/lib#{@crate}.so")
    File.mkdir_p!(Path.dirname(dest))

    if File.read!(built) == (File.exists?(dest) && File.read!(dest)) do
      {:noop, []}
    else
      # Copy then rename, so a VM that has the old library loaded never sees a half-written file.
      tmp = dest <> ".tmp"
      File.cp!(built, tmp)
      File.rename!(tmp, dest)
      {:ok, []}
    end
  end
end
