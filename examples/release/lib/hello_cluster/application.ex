defmodule HelloCluster.Application do
  @moduledoc """
  Starts `DynamicSrv.Cluster` on the service named by `CLUSTER_SERVICE`:

      export CLUSTER_SERVICE=hello.service.consul   # the SRV name listing every node

  Without `CLUSTER_SERVICE` the node runs alone.
  """
  use Application

  @impl true
  def start(_type, _args) do
    children =
      case System.get_env("CLUSTER_SERVICE", "") do
        "" -> []
        service -> [{DynamicSrv.Cluster, service: service, polling_interval: polling_interval()}]
      end

    Supervisor.start_link(children, strategy: :one_for_one, name: HelloCluster.Supervisor)
  end

  defp polling_interval do
    case System.get_env("CLUSTER_POLLING_INTERVAL_MS", "") do
      "" ->
        5_000

      value ->
        case Integer.parse(value) do
          {ms, ""} when ms > 0 ->
            ms

          _ ->
            raise ArgumentError,
                  "CLUSTER_POLLING_INTERVAL_MS=#{inspect(value)} is not a positive integer " <>
                    "(milliseconds between DNS polls; unset means 5000)"
        end
    end
  end
end
