defmodule DynamicSrv.Diagnosis.Configured do
  @moduledoc false
  # The clusters an application configures, found in application environments (what
  # `config/*.exs` set): libcluster topologies using Cluster.Strategy.DynamicSrv, wherever
  # they are kept (`config :libcluster, topologies: [...]` or an app's own key handed to
  # Cluster.Supervisor), and `{DynamicSrv.Cluster, opts}` child specs kept in config.
  # `mix dynamic_srv.doctor` checks them when run in the project without `--service`.

  alias DynamicSrv.Cluster.Options

  @max_depth 6

  @typedoc "A configured cluster, as the diagnosis checks it."
  @type t :: %{
          source: String.t(),
          service: String.t(),
          nameservers: String.t() | nil,
          naming: term(),
          ip_family: :inet | :inet6,
          dns_transport: :tcp | :udp
        }

  @doc """
  Every configured cluster in the environments of `apps` (default: every loaded application
  and `:libcluster`), and the problems of those whose config is invalid.
  """
  @spec find([atom()] | nil) :: {[t()], [%{what: String.t(), fix: String.t()}]}
  def find(apps \\ nil) do
    apps = apps || Enum.map(Application.loaded_applications(), &elem(&1, 0))

    found =
      for app <- Enum.uniq([:libcluster | apps]),
          {key, value} <- Application.get_all_env(app),
          entry <- walk(value, "config #{inspect(app)}, #{inspect(key)}", 0),
          do: entry

    found
    |> Enum.uniq_by(fn {source, config} -> {config[:service], source} end)
    |> Enum.reduce({[], []}, fn {source, config}, {clusters, problems} ->
      case cluster(source, config) do
        nil -> {clusters, problems}
        {:ok, cluster} -> {clusters ++ [cluster], problems}
        {:error, problem} -> {clusters, problems ++ [problem]}
      end
    end)
  end

  @doc "One configured cluster from its keyword config (`nil` when switched off)."
  @spec cluster(String.t(), keyword()) :: {:ok, t()} | {:error, map()} | nil
  def cluster(source, config) do
    case Keyword.get(config, :service) do
      off when off in [nil, :ignore] ->
        nil

      _service ->
        options = Options.validate!(config)

        {:ok,
         %{
           source: source,
           service: options.service,
           nameservers: options.nameservers,
           naming: options.node_naming,
           ip_family: options.ip_family,
           dns_transport: options.dns_transport
         }}
    end
  rescue
    error in ArgumentError ->
      {:error,
       %{
         what: "#{source}: #{Exception.message(error)}",
         fix: "correct the config as the message says (see DynamicSrv.Cluster for every key)"
       }}
  end

  defp walk(_value, _source, depth) when depth > @max_depth, do: []

  # A libcluster topology: `name: [strategy: Cluster.Strategy.DynamicSrv, config: [...]]`.
  defp walk({name, spec}, source, depth) when is_atom(name) and is_list(spec) do
    if Keyword.keyword?(spec) and spec[:strategy] == Cluster.Strategy.DynamicSrv do
      [{"#{source} (libcluster topology #{inspect(name)})", List.wrap(spec[:config])}]
    else
      if name == DynamicSrv.Cluster and Keyword.keyword?(spec) do
        [{"#{source} ({DynamicSrv.Cluster, ...} child)", spec}]
      else
        walk(spec, source, depth + 1)
      end
    end
  end

  defp walk(list, source, depth) when is_list(list) do
    list |> Enum.take(100) |> Enum.flat_map(&walk(&1, source, depth + 1))
  end

  defp walk(%{} = map, source, depth) when not is_struct(map) do
    map |> Enum.take(100) |> Enum.flat_map(&walk(&1, source, depth + 1))
  end

  defp walk(tuple, source, depth) when is_tuple(tuple) and tuple_size(tuple) <= 8 do
    tuple |> Tuple.to_list() |> Enum.flat_map(&walk(&1, source, depth + 1))
  end

  defp walk(_other, _source, _depth), do: []
end
