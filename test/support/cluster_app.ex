defmodule DynamicSrv.Test.ClusterApp do
  @moduledoc false
  # An application on a test or benchmark node whose supervisor runs the given children, as
  # a user's application runs libcluster's: on SIGTERM the VM stops it, and the supervisor
  # stops its children (last first) before the VM halts. A poller started any other way is
  # just killed at the halt.
  use Application

  @app :dynamic_srv_test_app

  @doc "Starts the application with `children` (child specs) under its supervisor."
  def start_children(children) do
    spec = [
      description: ~c"supervises the poller on a test node",
      vsn: ~c"0.0.0",
      modules: [__MODULE__],
      registered: [],
      applications: [:kernel, :stdlib],
      mod: {__MODULE__, children}
    ]

    :ok = :application.load({:application, @app, spec})
    :ok = Application.start(@app)
  end

  @doc "The pid of the running child of `module`, or nil."
  def child(module) do
    Enum.find_value(Supervisor.which_children(__MODULE__), fn
      {_id, pid, _, modules} when is_pid(pid) -> if module in List.wrap(modules), do: pid
      _ -> nil
    end)
  catch
    :exit, _ -> nil
  end

  @impl true
  def start(_type, children),
    do: Supervisor.start_link(children, strategy: :one_for_one, name: __MODULE__)
end

defmodule DynamicSrv.Test.ClusterApp.ShutdownProbe do
  @moduledoc false
  # A child listed before the poller, so stopped after it: at that moment it writes this
  # node's connections and the log lines DynamicSrv.Test.NodeAgent captured to `path`, then
  # takes `hold_ms` to stop, as a slow child of a real application does.
  use GenServer

  def start_link({path, hold_ms}), do: GenServer.start_link(__MODULE__, {path, hold_ms})

  @impl true
  def init(args) do
    Process.flag(:trap_exit, true)
    {:ok, args}
  end

  @impl true
  def terminate(_reason, {path, hold_ms}) do
    seen = {Node.list(:visible), DynamicSrv.Test.NodeAgent.captured_logs()}
    File.write!(path, :erlang.term_to_binary(seen))
    Process.sleep(hold_ms)
  end
end
