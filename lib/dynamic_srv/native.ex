defmodule DynamicSrv.Native do
  @moduledoc false
  # The only NIF boundary. Every function below is replaced by the Rust library
  # `native/dynamic_srv_nif` once `load/0` has run.
  #
  # Not loaded from @on_load: in a release (embedded mode) on_load handlers run after
  # net_sup has started the epmd module, so the epmd module loads it from start_link/0.

  @library "libdynamic_srv_nif"

  @doc false
  @spec environment() :: %{String.t() => String.t()}
  def environment do
    for var <- variables(), value = System.get_env(var), into: %{}, do: {var, value}
  end

  @doc false
  @spec load() :: :ok | {:error, String.t()}
  def load do
    if :persistent_term.get({__MODULE__, :loaded}, false) do
      :ok
    else
      path = library_path()

      with :ok <- library_whole(path),
           :ok <- load_nif(path) do
        :persistent_term.put({__MODULE__, :loaded}, true)
      end
    end
  end

  defp library_whole(path) do
    case DynamicSrv.Native.LibraryFile.check(path <> ".so") do
      :ok -> :ok
      {:error, why} -> {:error, cannot_load(path, why)}
    end
  end

  defp load_nif(path) do
    case :erlang.load_nif(String.to_charlist(path), 0) do
      :ok ->
        :ok

      # Another process loaded it between our check and our call.
      {:error, {:reload, _}} ->
        :ok

      {:error, {reason, text}} ->
        {:error, cannot_load(path, "#{reason}: #{text}")}
    end
  end

  defp cannot_load(path, why) do
    "cannot load the DynamicSrv NIF #{path}.so (#{why}); " <>
      "rebuild it with `mix compile` (needs cargo)"
  end

  defp library_path do
    priv =
      case :code.priv_dir(:libcluster_dynamic_srv) do
        {:error, :bad_name} ->
          Path.join([Path.dirname(to_string(:code.which(__MODULE__))), "..", "priv"])

        dir ->
          to_string(dir)
      end

    Path.join([priv, "native", @library])
  end

  def configure(_vars), do: :erlang.nif_error(:nif_not_loaded)
  def variables, do: :erlang.nif_error(:nif_not_loaded)
  def lookup_timeout_ms(_engine), do: :erlang.nif_error(:nif_not_loaded)
  def listen_port(_engine, _node), do: :erlang.nif_error(:nif_not_loaded)
  def lookup_cached(_engine, _node, _family), do: :erlang.nif_error(:nif_not_loaded)
  def lookup(_engine, _node, _family, _pid, _tag), do: :erlang.nif_error(:nif_not_loaded)
  def port_please(_engine, _name, _ip), do: :erlang.nif_error(:nif_not_loaded)
  def topology_new(_vars, _options), do: :erlang.nif_error(:nif_not_loaded)
  def topology_poll(_topology, _pid, _tag), do: :erlang.nif_error(:nif_not_loaded)
  def topology_apply(_topology, _records), do: :erlang.nif_error(:nif_not_loaded)
  def topology_fail(_topology, _reason), do: :erlang.nif_error(:nif_not_loaded)
  def topology_members(_topology), do: :erlang.nif_error(:nif_not_loaded)
  def topology_seed(_topology, _nodes), do: :erlang.nif_error(:nif_not_loaded)
  def set_log_forwarder(_pid), do: :erlang.nif_error(:nif_not_loaded)
  def log_stats, do: :erlang.nif_error(:nif_not_loaded)
  def log_probe(_level, _message), do: :erlang.nif_error(:nif_not_loaded)
  def config_settings(_vars), do: :erlang.nif_error(:nif_not_loaded)
  def cache_snapshot(_limit), do: :erlang.nif_error(:nif_not_loaded)
  def diagnoser_new(_vars, _nameservers, _own_node), do: :erlang.nif_error(:nif_not_loaded)
  def diagnoser_info(_diagnoser), do: :erlang.nif_error(:nif_not_loaded)

  def diagnose_node(_diagnoser, _node, _family, _listen_port, _pid, _tag),
    do: :erlang.nif_error(:nif_not_loaded)

  def diagnose_query(_diagnoser, _kind, _name, _pid, _tag),
    do: :erlang.nif_error(:nif_not_loaded)

  def diagnose_members(_diagnoser, _service, _naming, _family, _pid, _tag),
    do: :erlang.nif_error(:nif_not_loaded)

  # Only in a library built with the test-only cargo feature `panic-probe`.
  def panic_probe(_place, _pid, _tag), do: :erlang.nif_error(:nif_not_loaded)
end
