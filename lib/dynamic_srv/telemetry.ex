defmodule DynamicSrv.Telemetry do
  @moduledoc """
  `:telemetry` events, emitted when the `:telemetry` module is loaded. This package does not
  depend on telemetry: add it to your own deps (libcluster and Phoenix already bring it) and
  attach handlers as usual. Without it every call here is a cheap no-op.

      :telemetry.attach_many("dns-alerts", [
        [:dynamic_srv, :poll, :stop],
        [:dynamic_srv, :outage, :start],
        [:dynamic_srv, :outage, :stop],
        [:dynamic_srv, :lookup, :stop]
      ], &MyApp.Metrics.handle_event/4, nil)

  The events, their measurements and metadata are listed in one table in the README
  (section "Telemetry"): a poll (`[:dynamic_srv, :poll, :stop]`), a DNS outage's start and end
  (`[:dynamic_srv, :outage, :start]`, `[:dynamic_srv, :outage, :stop]`) and an address-cache
  miss looked up by `DynamicSrv.Epmd` (`[:dynamic_srv, :lookup, :stop]`).

  `System.convert_time_unit(duration, :native, :millisecond)` turns a duration into ms.
  Handlers run in the process that emits the event, as `:telemetry` always does: the poller,
  or for a lookup the connection's setup process (never `net_kernel`; an answer from the
  address cache emits nothing and waits on nothing). Keep them fast.
  """

  @doc false
  # Whether `:telemetry` is there to call. Attaching a handler loads the module, so when it
  # is not loaded nobody listens; checking costs one BIF call, never a code-server lookup.
  @spec enabled?() :: boolean()
  def enabled?, do: function_exported?(:telemetry, :execute, 3)

  @doc false
  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    if enabled?() do
      # A handler that raises is detached by :telemetry itself; guard anyway, so a broken
      # stand-in never takes the poller or a connection attempt down.
      try do
        apply(:telemetry, :execute, [event, measurements, metadata])
      catch
        _kind, _reason -> :ok
      end
    end

    :ok
  end

  # --- poller hooks (DynamicSrv.Cluster) ----------------------------------------------------

  @doc false
  # Called when a poll starts; returns the state with the poll's start time.
  @spec poll_started(map()) :: map()
  def poll_started(state), do: Map.put(state, :telemetry_poll_started, System.monotonic_time())

  @doc false
  # Called once a poll's result is applied: the poll event, and the outage events on its
  # edges. Keeps the outage's start time (and error) in the state. `change` holds how many
  # nodes joined and left as the poller applied it (a reply it gave up on counts in the next).
  @spec poll_applied(map(), %{joined: non_neg_integer(), left: non_neg_integer()}, map()) ::
          map()
  def poll_applied(poll, change, state) do
    now = System.monotonic_time()
    base = %{topology: state.topology, service: state.options.service}
    outage = Map.get(state, :telemetry_outage)

    outage =
      cond do
        reason = poll.outage_started ->
          execute(
            [:dynamic_srv, :outage, :start],
            %{system_time: System.system_time()},
            Map.merge(base, %{error: reason, members: length(state.members)})
          )

          %{since: now, error: reason}

        failed = poll.outage_ended ->
          since = if outage, do: outage.since, else: now

          execute(
            [:dynamic_srv, :outage, :stop],
            %{duration: now - since, failed_polls: failed},
            base
          )

          nil

        true ->
          outage
      end

    started = Map.get(state, :telemetry_poll_started, now)

    execute(
      [:dynamic_srv, :poll, :stop],
      %{
        duration: now - started,
        members: length(state.members),
        joined: change.joined,
        left: change.left
      },
      Map.merge(base, %{
        result: if(poll.failed, do: :error, else: :ok),
        error: if(poll.failed, do: outage && outage.error, else: nil)
      })
    )

    Map.put(state, :telemetry_outage, outage)
  end

  # --- epmd hook (DynamicSrv.Epmd, cache misses only) ---------------------------------------

  @doc false
  @spec lookup_done(String.t(), :inet | :inet6, integer(), term()) :: :ok
  def lookup_done(node, family, started, result) do
    if enabled?() do
      {outcome, reason, address} =
        case result do
          {:ok, ip, port, _version} -> {:ok, nil, endpoint(ip, port)}
          {:error, reason} -> {:error, reason, nil}
        end

      execute(
        [:dynamic_srv, :lookup, :stop],
        %{duration: System.monotonic_time() - started},
        %{node: node, family: family, result: outcome, reason: reason, address: address}
      )
    end

    :ok
  end

  defp endpoint({_, _, _, _, _, _, _, _} = ip, port), do: "[#{:inet.ntoa(ip)}]:#{port}"
  defp endpoint(ip, port), do: "#{:inet.ntoa(ip)}:#{port}"
end
