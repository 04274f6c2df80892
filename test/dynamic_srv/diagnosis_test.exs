defmodule DynamicSrv.DiagnosisTest do
  # DynamicSrv.Diagnosis in the (non-distributed) test VM against a real dnsmasq, the Mix
  # task, and the log forwarding from Rust to Logger. async: false: the forwarder, the NIF's
  # log subscriber and :logger handlers are global to the VM.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias DynamicSrv.{Diagnosis, LogForwarder, Native}
  alias DynamicSrv.Test.{DnsServer, Peer, Ports}

  @zone_opts [extra: ["--local=/dyn.test/"]]

  setup_all do
    :ok = Native.load()
    :ok
  end

  defp start_dns!(records, opts) do
    dns = DnsServer.start!(records, opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)
    dns
  end

  defp env(dns, extra \\ %{}) do
    Map.merge(
      %{
        "ERL_DIST_PORT" => "24501",
        "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
        "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "300"
      },
      extra
    )
  end

  defp text(report), do: Enum.join(Diagnosis.format(report), "\n")

  describe "run/1 and format/1" do
    test "a healthy node: configuration sources, its SRV answer with timing, no problems" do
      dns =
        start_dns!(
          [{:srv, "a.dyn.test", "a-host.dyn.test", 24501}, {:a, "a-host.dyn.test", "127.0.0.1"}],
          @zone_opts
        )

      report = Diagnosis.run(node: "a@dyn.test", env: env(dns))
      out = text(report)
      IO.puts(Enum.find(Diagnosis.format(report), &(&1 =~ "SRV a.dyn.test:")))

      assert report.problems == []
      assert out =~ ~s(ERL_DIST_PORT = 24501    from the environment: ERL_DIST_PORT="24501")
      assert out =~ "DYNAMIC_SRV_PORT_MODE = srv    default (DYNAMIC_SRV_PORT_MODE is not set)"
      assert out =~ "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS = 300 ms    from the environment"
      assert out =~ "port mode: srv; distribution port: 24501 (from ERL_DIST_PORT)"
      assert out =~ "nameservers: #{DnsServer.nameserver(dns)}"
      assert out =~ ~r/SRV a\.dyn\.test: 1 answer in [\d.]+ ms/
      assert out =~ "a-host.dyn.test:24501 (priority 0, weight 0, ttl 0 s; 127.0.0.1)"
      assert out =~ "=> connects to 127.0.0.1:24501"
      assert out =~ "No problems found."
    end

    test "DNS advertising another port than this node's is a problem with its fix" do
      dns =
        start_dns!(
          [{:srv, "a.dyn.test", "a-host.dyn.test", 24999}, {:a, "a-host.dyn.test", "127.0.0.1"}],
          @zone_opts
        )

      out = text(Diagnosis.run(node: "a@dyn.test", env: env(dns)))

      assert out =~
               "PROBLEM: DNS advertises port 24999 for this node (a.dyn.test), but it listens " <>
                 "on 24501: peers will dial the wrong port"

      assert out =~
               "fix: register the SRV record a.dyn.test with the port in ERL_DIST_PORT (24501)"

      assert out =~ "Problems (1):"
    end

    test "NXDOMAIN, a missing ERL_DIST_PORT and a bad variable are each named with a fix" do
      dns = start_dns!([{:a, "other.dyn.test", "127.0.0.1"}], @zone_opts)

      report =
        Diagnosis.run(
          node: "a@dyn.test",
          services: ["svc.dyn.test"],
          env:
            env(dns, %{"DYNAMIC_SRV_MIN_TTL_MS" => "soon"})
            |> Map.delete("ERL_DIST_PORT")
        )

      out = text(report)
      assert out =~ "ERL_DIST_PORT: INVALID: ERL_DIST_PORT is not set"
      assert out =~ ~s(DYNAMIC_SRV_MIN_TTL_MS: INVALID: DYNAMIC_SRV_MIN_TTL_MS="soon")
      assert out =~ "fix: set ERL_DIST_PORT to the port this node listens on"
      assert out =~ ~r/SRV svc\.dyn\.test: FAILED after [\d.]+ ms \(nxdomain\)/

      assert out =~
               "fix: #{DnsServer.nameserver(dns)} says svc.dyn.test does not exist: is the " <>
                 "service (or this node) registered under that name?"

      # The nameservers were usable even though the rest of the configuration is not.
      assert out =~ "nameservers: #{DnsServer.nameserver(dns)}"
      assert length(report.problems) >= 3
    end

    test "a dead nameserver: a timeout that names the server and the limit" do
      dead = "127.0.0.1:#{Peer.dead_port()}"

      report =
        Diagnosis.run(
          node: "a@dyn.test",
          env: %{
            "ERL_DIST_PORT" => "24501",
            "DYNAMIC_SRV_NAMESERVERS" => dead,
            "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "300"
          }
        )

      out = text(report)
      assert out =~ ~r/SRV a\.dyn\.test: FAILED after \d+(\.\d+)? ms \((timeout|unreachable)\)/
      assert out =~ "nothing answered at #{dead} within 300 ms" or out =~ "cannot reach #{dead}"
    end

    test "REFUSED from a server that does not serve the zone" do
      # No --local: dnsmasq refuses names it has no records for.
      dns = start_dns!([{:a, "other.example", "127.0.0.1"}], [])
      out = text(Diagnosis.run(node: "a@dyn.test", env: env(dns)))
      assert out =~ "(refused)"
      assert out =~ "#{DnsServer.nameserver(dns)} refused the query (REFUSED)"
    end

    test "a diagnosis never changes the shared address cache" do
      dns =
        start_dns!(
          [{:srv, "b.dyn.test", "b-host.dyn.test", 24502}, {:a, "b-host.dyn.test", "127.0.0.1"}],
          @zone_opts
        )

      before = cache_keys()
      report = Diagnosis.run(node: "a@dyn.test", peers: ["b@dyn.test"], env: env(dns))
      [peer] = report.peers
      assert peer.endpoint == "127.0.0.1:24502"
      assert cache_keys() == before
      refute Enum.any?(before, &match?({"b@dyn.test", _, _}, &1))
    end
  end

  describe "DynamicSrv.diagnose/1" do
    test "prints on the group leader and returns {:problems, n} or :ok" do
      port = Ports.free()
      dead = "127.0.0.1:#{Peer.dead_port()}"
      saved = System.get_env("DYNAMIC_SRV_NAMESERVERS")
      System.put_env("DYNAMIC_SRV_NAMESERVERS", dead)

      on_exit(fn ->
        if saved,
          do: System.put_env("DYNAMIC_SRV_NAMESERVERS", saved),
          else: System.delete_env("DYNAMIC_SRV_NAMESERVERS")
      end)

      {result, out} =
        with_io(fn -> DynamicSrv.diagnose(peers: ["p-#{port}@dyn.test"], node: "a@dyn.test") end)

      assert {:problems, n} = result
      assert n >= 1
      assert out =~ "DynamicSrv diagnosis of a@dyn.test"
      assert out =~ "Peers (1 checked):"
    end
  end

  describe "mix dynamic_srv.doctor" do
    test "checks --node and --service with --nameservers, exits 1 on a problem" do
      dns =
        start_dns!(
          [
            {:srv, "a.dyn.test", "a-host.dyn.test", 24501},
            {:a, "a-host.dyn.test", "127.0.0.1"}
          ],
          @zone_opts
        )

      Mix.shell(Mix.Shell.Process)
      on_exit(fn -> Mix.shell(Mix.Shell.IO) end)
      System.put_env("ERL_DIST_PORT", "24501")
      on_exit(fn -> System.delete_env("ERL_DIST_PORT") end)

      args = ["--node", "a@dyn.test", "--nameservers", DnsServer.nameserver(dns)]
      Mix.Tasks.DynamicSrv.Doctor.run(args)
      assert_received {:mix_shell, :info, ["No problems found."]}

      assert catch_exit(Mix.Tasks.DynamicSrv.Doctor.run(args ++ ["--service", "gone.dyn.test"])) ==
               {:shutdown, 1}

      assert_received {:mix_shell, :info, ["Problems (1):"]}

      assert_raise Mix.Error, ~r/unexpected arguments/, fn ->
        Mix.Tasks.DynamicSrv.Doctor.run(["--bogus"])
      end
    end
  end

  describe "log forwarding" do
    defmodule Capture do
      @moduledoc false
      # A :logger handler that sends every event to the test process.
      def log(event, %{config: %{pid: pid}}), do: send(pid, {:logged, event})
    end

    setup do
      previous = :logger.get_primary_config().level
      :logger.set_primary_config(:level, :all)
      :ok = :logger.add_handler(:dynamic_srv_capture, Capture, %{config: %{pid: self()}})

      on_exit(fn ->
        :logger.remove_handler(:dynamic_srv_capture)
        :logger.set_primary_config(:level, previous)
      end)

      LogForwarder.ensure_started()
      :ok
    end

    test "each Rust level reaches Logger at the matching level, trace as debug, with metadata" do
      for {level, expected} <- [
            error: :error,
            warning: :warning,
            info: :info,
            debug: :debug,
            trace: :debug
          ] do
        message = "probe #{level} #{System.unique_integer([:positive])}"
        :ok = Native.log_probe(level, message)

        assert_receive {:logged, %{level: ^expected, msg: {:string, ^message}, meta: meta}},
                       5_000

        assert meta.dynamic_srv == true
        assert meta.rust_target == "dynamic_srv_nif"
        assert meta.probe == "true"
      end
    end

    test "a forwarder that died is replaced, and events in between are not lost" do
      pid = Process.whereis(LogForwarder)
      ref = Process.monitor(pid)
      Process.exit(pid, :kill)
      assert_receive {:DOWN, ^ref, _, _, _}

      :ok = Native.log_probe(:warning, "while nobody listens")
      # The event waits in the Rust backlog until a forwarder registers.
      assert eventually(fn -> Native.log_stats().backlog == 1 end)
      refute Native.log_stats().forwarder
      refute_received {:logged, _}

      LogForwarder.ensure_started()
      assert_receive {:logged, %{level: :warning, msg: {:string, "while nobody listens"}}}, 5_000
      assert eventually(fn -> Native.log_stats().forwarder end)
      IO.puts("log stats: #{inspect(Native.log_stats())}")
    end
  end

  defp cache_keys do
    for e <- Native.cache_snapshot(100_000).entries, do: {e.node, e.family, e.endpoint}
  end

  defp eventually(fun, tries \\ 100) do
    cond do
      fun.() -> true
      tries == 0 -> false
      true -> Process.sleep(20) && eventually(fun, tries - 1)
    end
  end
end
