defmodule :telemetry do
  @moduledoc false
  # A stand-in for the `:telemetry` library (which cannot be fetched where this package is
  # built), compiled only into the test build: the calls DynamicSrv.Telemetry makes and a
  # handler needs, with telemetry's semantics (handlers run in the emitting process; a handler
  # that raises is detached). Handlers live in :persistent_term, per node.

  @key {__MODULE__, :handlers}

  def attach(id, event, fun, config), do: attach_many(id, [event], fun, config)

  def attach_many(id, events, fun, config) when is_function(fun, 4) do
    handlers = handlers()

    if Enum.any?(handlers, &(elem(&1, 0) == id)) do
      {:error, :already_exists}
    else
      :persistent_term.put(@key, handlers ++ [{id, events, fun, config}])
      :ok
    end
  end

  def detach(id) do
    handlers = handlers()

    case Enum.reject(handlers, &(elem(&1, 0) == id)) do
      ^handlers -> {:error, :not_found}
      rest -> :persistent_term.put(@key, rest) && :ok
    end
  end

  def execute(event, measurements, metadata) when is_map(measurements) and is_map(metadata) do
    for {id, events, fun, config} <- handlers(), event in events do
      try do
        fun.(event, measurements, metadata, config)
      rescue
        _ -> detach(id)
      end
    end

    :ok
  end

  def list_handlers(prefix) do
    for {id, events, _fun, _config} <- handlers(),
        event <- events,
        List.starts_with?(event, prefix),
        do: %{id: id, event_name: event}
  end

  defp handlers, do: :persistent_term.get(@key, [])
end

defmodule DynamicSrv.Test.TelemetryRecorder do
  @moduledoc false
  # Attaches one handler to every DynamicSrv event and keeps what arrives, in order, in a
  # public ETS table of the node it runs on (read with events/0, over Peer.call).

  @table :dynamic_srv_test_telemetry
  @events [
    [:dynamic_srv, :poll, :stop],
    [:dynamic_srv, :outage, :start],
    [:dynamic_srv, :outage, :stop],
    [:dynamic_srv, :lookup, :stop]
  ]

  def start do
    if :ets.whereis(@table) == :undefined do
      caller = self()

      spawn(fn ->
        :ets.new(@table, [:named_table, :public, :ordered_set])
        send(caller, :table_ready)
        Process.sleep(:infinity)
      end)

      receive do
        :table_ready -> :ok
      end
    end

    :telemetry.attach_many("dynamic-srv-test", @events, &__MODULE__.handle/4, nil)
    :ok
  end

  def handle(event, measurements, metadata, _config) do
    :ets.insert(
      @table,
      {System.unique_integer([:monotonic]), event, measurements, metadata, self()}
    )
  end

  @doc "`[{event, measurements, metadata, emitting_pid}]`, in order."
  def events do
    for {_, event, m, md, pid} <- :ets.tab2list(@table), do: {event, m, md, pid}
  end

  def events(name), do: for({^name, m, md, _pid} <- events(), do: {m, md})

  def clear, do: :ets.delete_all_objects(@table) && :ok
end
