defmodule DynamicSrv.LogForwarder do
  @moduledoc """
  Sends the Rust side's log events to Logger. Nothing to configure: it starts by itself.

      # config/runtime.exs: these events are filtered like any other
      config :logger, level: :info
      # ...and carry the metadata `dynamic_srv: true` (plus `rust_target`, `node`, `reason`)

  `DynamicSrv.Epmd` starts it when distribution starts (before the Logger application does),
  `DynamicSrv.Cluster` and `DynamicSrv.diagnose/1` when they load the NIF. It is a small
  registered process outside any supervision tree, because the epmd module runs under
  `net_sup` and this library's application may never be started (`-epmd_module` alone needs
  no application); if it dies, the next of those calls starts a new one.

  Levels map one to one (Rust `ERROR`/`WARN`/`INFO`/`DEBUG`, and `TRACE` as `:debug`). Events
  emitted before it runs wait in a bounded backlog on the Rust side and are delivered first;
  the Rust side never waits for Logger: when the backlog is full the oldest events are dropped
  and counted (`DynamicSrv.diagnose/1` shows the count). A DNS outage is logged once when it
  starts (warning) and once when DNS answers again (info), not once per failed lookup.
  """

  alias DynamicSrv.Native

  @doc """
  Starts the forwarder unless it runs, and returns once one is registered; call only after
  `DynamicSrv.Native.load/0`.
  """
  @spec ensure_started() :: :ok
  def ensure_started do
    if Process.whereis(__MODULE__) == nil do
      caller = self()
      ready = make_ref()
      {_pid, monitor} = :proc_lib.spawn_opt(fn -> init(caller, ready) end, [:monitor])

      # It exits at once if another caller registered one first: that one serves as well.
      receive do
        {^ready, :registered} -> :ok
        {:DOWN, ^monitor, :process, _pid, _reason} -> :ok
      after
        5_000 -> :ok
      end

      Process.demonitor(monitor, [:flush])
    end

    :ok
  end

  defp init(caller, ready) do
    # Started from whichever process loads the NIF (possibly an rpc call from a node that
    # goes away): answer to the node's own I/O, not the caller's.
    if user = Process.whereis(:user), do: Process.group_leader(self(), user)

    try do
      Process.register(self(), __MODULE__)
    rescue
      # Another caller started one first.
      ArgumentError -> exit(:normal)
    end

    :ok = Native.set_log_forwarder(self())
    send(caller, {ready, :registered})
    loop()
  end

  defp loop do
    receive do
      {:dynamic_srv_log, level, message, metadata} ->
        forward(level, message, metadata)

      _other ->
        :ok
    end

    loop()
  end

  @doc false
  @spec forward(:logger.level(), String.t(), [{atom(), String.t()}]) :: :ok
  def forward(level, message, metadata) do
    meta =
      metadata
      |> Map.new()
      |> Map.merge(%{dynamic_srv: true, domain: [:dynamic_srv]})

    :logger.log(level, message, meta)
  catch
    # A broken handler must not take the forwarder down with it.
    _kind, _reason -> :ok
  end
end
