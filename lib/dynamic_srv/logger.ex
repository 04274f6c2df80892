defmodule DynamicSrv.Logger do
  @moduledoc false
  # `Logger`, with libcluster's `[libcluster:<topology>] ` prefix on every message when the
  # calling process polls a libcluster topology (libcluster's own Cluster.Logger writes
  # "[libcluster:#{topology}] #{message}"), so grepping for a topology finds this package's
  # lines too. A module logs through it with `require DynamicSrv.Logger, as: Logger`: every
  # `Logger.info/warning/...` call in it, present and future, is then prefixed, and keeps
  # Logger's own metadata (file, line, module) and laziness.

  @prefix_key {__MODULE__, :prefix}

  @doc "From now on this process's messages carry libcluster's prefix for `topology`."
  @spec put_libcluster_topology(atom() | String.t()) :: :ok
  def put_libcluster_topology(topology) do
    Process.put(@prefix_key, "[libcluster:#{topology}] ")
    :ok
  end

  @doc "The prefix of this process's messages (`\"\"` when none)."
  @spec prefix() :: String.t()
  def prefix, do: Process.get(@prefix_key, "")

  @doc false
  # A message as Logger takes it: chardata, or a function returning chardata or
  # `{chardata, metadata}`.
  def prefixed(message) do
    case prefix() do
      "" -> message
      prefix -> add_prefix(prefix, message)
    end
  end

  defp add_prefix(prefix, fun) when is_function(fun, 0) do
    fn ->
      case fun.() do
        {message, metadata} -> {[prefix, message], metadata}
        message -> [prefix, message]
      end
    end
  end

  defp add_prefix(prefix, message), do: IO.chardata_to_string([prefix, message])

  for level <- [:debug, :info, :notice, :warning, :error] do
    defmacro unquote(level)(message, metadata \\ []) do
      level = unquote(level)

      quote do
        require Elixir.Logger

        Elixir.Logger.unquote(level)(
          DynamicSrv.Logger.prefixed(unquote(message)),
          unquote(metadata)
        )
      end
    end
  end

  defmacro log(level, message, metadata \\ []) do
    quote do
      require Elixir.Logger

      Elixir.Logger.log(
        unquote(level),
        DynamicSrv.Logger.prefixed(unquote(message)),
        unquote(metadata)
      )
    end
  end

  @doc false
  defdelegate metadata(keyword), to: Elixir.Logger

  @doc false
  defdelegate metadata(), to: Elixir.Logger
end
