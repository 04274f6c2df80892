defmodule DynamicSrv.Cluster.Options do
  @moduledoc false
  # Validates the keyword config shared by DynamicSrv.Cluster and Cluster.Strategy.DynamicSrv.

  @naming_help "expected :service_prefix, {:basename_port, \"app\"}, {:basename_port_ip, \"app\"}, {:basename, \"app\"} or {:basename_ip, \"app\"}"
  @known [
    :service,
    :polling_interval,
    :disconnect_on_deregister,
    :resolver,
    :nameservers,
    :node_naming,
    :ip_family,
    :max_nodes,
    :max_node_atoms,
    :dns_transport,
    :removal_delay,
    :disconnect_grace
  ]

  @spec validate!(keyword()) :: map()
  def validate!(config) do
    unless Keyword.keyword?(config),
      do: raise(ArgumentError, "config must be a keyword list, got: #{inspect(config)}")

    case Keyword.keys(config) -- @known do
      [] ->
        :ok

      unknown ->
        raise ArgumentError,
              "unknown config keys #{inspect(unknown)}; known keys: #{inspect(@known)}"
    end

    max_nodes = get(config, :max_nodes, 1024, &pos_integer?/1, "a positive integer")

    polling_interval =
      get(config, :polling_interval, 5_000, &pos_integer?/1, "a positive number of milliseconds")

    %{
      service:
        get(
          config,
          :service,
          nil,
          &service?/1,
          "a DNS name string such as \"my-svc.service.consul\""
        ),
      polling_interval: polling_interval,
      disconnect_on_deregister:
        get(config, :disconnect_on_deregister, true, &is_boolean/1, "a boolean"),
      resolver:
        get(config, :resolver, nil, &(is_nil(&1) or is_function(&1, 1)), "a 1-arity function"),
      nameservers:
        get(
          config,
          :nameservers,
          nil,
          &(is_nil(&1) or is_binary(&1)),
          "a string such as \"127.0.0.1:8600\""
        ),
      node_naming: get(config, :node_naming, :service_prefix, &naming?/1, @naming_help),
      ip_family: get(config, :ip_family, :inet, &(&1 in [:inet, :inet6]), ":inet or :inet6"),
      max_nodes: max_nodes,
      dns_transport: get(config, :dns_transport, :tcp, &(&1 in [:tcp, :udp]), ":tcp or :udp"),
      removal_delay:
        get(
          config,
          :removal_delay,
          10_000,
          &(is_integer(&1) and &1 >= 0 and &1 <= 86_400_000),
          "milliseconds from 0 to 86400000"
        ),
      # Two nodes decide a third left up to about two polling intervals apart (each waits for
      # its own confirmations); three cover it, so the node itself leaves first.
      disconnect_grace:
        get(
          config,
          :disconnect_grace,
          min(3 * polling_interval, 86_400_000),
          &(is_integer(&1) and &1 >= 0 and &1 <= 86_400_000),
          "milliseconds from 0 to 86400000"
        ),
      max_node_atoms:
        get(config, :max_node_atoms, 16 * max_nodes, &pos_integer?/1, "a positive integer")
    }
  end

  defp get(config, key, default, valid?, expected) do
    case Keyword.fetch(config, key) do
      {:ok, value} ->
        if valid?.(value),
          do: value,
          else: raise(ArgumentError, "invalid #{key}: #{inspect(value)}, expected #{expected}")

      :error when default == nil and key == :service ->
        raise ArgumentError, "missing required config key :service (#{expected})"

      :error ->
        default
    end
  end

  defp pos_integer?(value), do: is_integer(value) and value > 0
  defp service?(value), do: is_binary(value) and value != ""

  defp naming?(:service_prefix), do: true

  defp naming?({kind, base})
       when kind in [:basename_port, :basename_port_ip, :basename, :basename_ip],
       do: is_binary(base) and base != ""

  defp naming?(_), do: false
end
