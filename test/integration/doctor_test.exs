defmodule DynamicSrv.Integration.DoctorTest do
  # The doctor's blind spots, found on real nodes behind a real dnsmasq: a node missing from
  # its configured service, a node listed under another name, a node named after an IP in
  # `srv` mode; and `mix dynamic_srv.doctor` run as an operator runs it (exit status, the
  # port's origin, a host name in --nameservers, --service without --node).
  use ExUnit.Case, async: false
  @moduletag :integration

  alias DynamicSrv.Test.{DnsServer, NodeAgent, Peer, Ports}

  @zone_opts [extra: ["--local=/dyn.test/"]]

  defp boot!(name, port, dns, extra \\ %{}, opts \\ []) do
    peer =
      Peer.start!(
        name,
        Map.merge(
          %{
            "ERL_DIST_PORT" => Integer.to_string(port),
            "DYNAMIC_SRV_NAMESERVERS" => DnsServer.nameserver(dns),
            "DYNAMIC_SRV_LOOKUP_TIMEOUT_MS" => "300"
          },
          extra
        ),
        opts
      )

    on_exit(fn -> Peer.stop(peer) end)
    peer
  end

  defp assert_line(text, expected) do
    assert Enum.any?(String.split(text, "\n"), &String.contains?(&1, expected)),
           "expected a line containing\n  #{expected}\nin:\n#{text}"
  end

  @tag timeout: 120_000
  test "a configured topology that does not list this node, or lists it under its IP" do
    [p1, p2] = [Ports.free(), Ports.free()]

    records = [
      # svc.dyn.test lists n2 only; n1 runs, with its own SRV record, but is not in it.
      {:srv, "svc.dyn.test", "n2.svc.dyn.test", p2},
      {:srv, "n1.svc.dyn.test", "n1-host.dyn.test", p1},
      {:srv, "n2.svc.dyn.test", "n2-host.dyn.test", p2},
      {:a, "n1-host.dyn.test", "127.0.0.1"},
      {:a, "n2-host.dyn.test", "127.0.0.1"},
      # ips.dyn.test lists n1's host and port: under {:basename_port_ip, "app"} that is
      # app-P1@127.0.0.1, n1 under another name.
      {:srv, "ips.dyn.test", "n1-host.dyn.test", p1}
    ]

    dns = DnsServer.start!(records, @zone_opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)
    n1 = boot!("n1@svc.dyn.test", p1, dns)
    _n2 = boot!("n2@svc.dyn.test", p2, dns)

    # The app's config, as config/runtime.exs would set it (nothing is started).
    :ok =
      Peer.call(n1, Application, :put_env, [
        :libcluster,
        :topologies,
        [
          app: [strategy: Cluster.Strategy.DynamicSrv, config: [service: "svc.dyn.test"]],
          ips: [
            strategy: Cluster.Strategy.DynamicSrv,
            config: [service: "ips.dyn.test", node_naming: {:basename_port_ip, "app"}]
          ]
        ]
      ])

    {result, text} = Peer.call(n1, NodeAgent, :capture_output, [DynamicSrv, :diagnose, []])
    IO.puts(text)
    # app-P1@127.0.0.1, a member of ips.dyn.test, is this node under another name: that one
    # problem, not also the peer's (named after an IP in srv mode).
    assert {:problems, 2} = result
    refute text =~ "SRV lookup of app-#{p1}.127.0.0.1"
    refute text =~ "is named after an IP address"

    assert_line(
      text,
      "this node under another name (its address and port): see the problems"
    )

    assert_line(
      text,
      "Service svc.dyn.test (configured in config :libcluster, :topologies " <>
        "(libcluster topology :app), not running here):"
    )

    assert_line(text, "  => nodes (node_naming :service_prefix): n2@svc.dyn.test")

    assert_line(
      text,
      "this node (n1@svc.dyn.test) is not among the nodes svc.dyn.test lists " <>
        "(1 node: n2@svc.dyn.test): the other nodes never connect to it"
    )

    assert_line(
      text,
      "fix: make svc.dyn.test list it: register an SRV record of svc.dyn.test with target " <>
        "n1.svc.dyn.test and port #{p1} (its A record pointing at this host)"
    )

    assert_line(
      text,
      "ips.dyn.test lists this node as app-#{p1}@127.0.0.1, not as n1@svc.dyn.test: " <>
        "127.0.0.1:#{p1} is this node's address and port"
    )

    assert_line(
      text,
      "fix: start this node as app-#{p1}@127.0.0.1 (--name app-#{p1}@127.0.0.1, or " <>
        "RELEASE_NODE=app-#{p1}@127.0.0.1 in a release; with DYNAMIC_SRV_PORT_MODE=name), or " <>
        "keep n1@svc.dyn.test: {:basename_port_ip, \"app\"} names the nodes ips.dyn.test " <>
        "lists after their addresses (app-#{p1}@127.0.0.1), so it never reaches " <>
        "n1@svc.dyn.test: poll it with the node_naming the cluster's node names follow"
    )
  end

  @tag timeout: 120_000
  test "a peer on another loopback address with the same port is another node, not an alias" do
    # static mode, one loopback address per node on one shared port (as in Docker, or the
    # scale benchmark): app@h2, on 127.0.0.2, is not running, so nothing is connected to it.
    port = Ports.free()

    records = [
      {:srv, "svc.dyn.test", "h1.dyn.test", port},
      {:srv, "svc.dyn.test", "h2.dyn.test", port},
      {:a, "h1.dyn.test", "127.0.0.1"},
      {:a, "h2.dyn.test", "127.0.0.2"}
    ]

    dns = DnsServer.start!(records, @zone_opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)

    n1 =
      boot!("app@h1.dyn.test", port, dns, %{"DYNAMIC_SRV_PORT_MODE" => "static"},
        erl_args: ["-kernel", "inet_dist_use_interface", "{127,0,0,1}"]
      )

    diagnose = [[services: ["svc.dyn.test"], naming: {:basename, "app"}]]
    {result, text} = Peer.call(n1, NodeAgent, :capture_output, [DynamicSrv, :diagnose, diagnose])
    IO.puts(text)
    assert result == :ok
    refute text =~ "lists this node as"
    assert_line(text, ": app@h1.dyn.test, app@h2.dyn.test")
    assert_line(text, "    => connects to 127.0.0.2:#{port}")
  end

  @tag timeout: 120_000
  test "a node named after its IP in srv port mode is told to use name mode" do
    port = Ports.free()
    dns = DnsServer.start!([{:a, "unrelated.dyn.test", "127.0.0.1"}], @zone_opts)
    on_exit(fn -> DnsServer.stop_and_clean(dns) end)
    node = "app-#{port}@127.0.0.1"
    peer = boot!(node, port, dns)

    {result, text} = Peer.call(peer, NodeAgent, :capture_output, [DynamicSrv, :diagnose, []])
    IO.puts(text)
    assert {:problems, _} = result

    assert_line(
      text,
      "node #{node} is named after an IP address, but DYNAMIC_SRV_PORT_MODE=srv looks its " <>
        "port up in the SRV record app-#{port}.127.0.0.1, which no DNS server publishes"
    )

    assert_line(
      text,
      "fix: set DYNAMIC_SRV_PORT_MODE=name: #{node} then listens on #{port}, the digits of " <>
        "its name"
    )
  end

  @tag timeout: 180_000
  test "mix dynamic_srv.doctor: exit status, the port's origin, --nameservers with a host name" do
    dns =
      DnsServer.start!(
        [
          {:srv, "svc.dyn.test", "n2.svc.dyn.test", 4402},
          {:a, "n2.svc.dyn.test", "127.0.0.1"},
          {:srv, "n2.svc.dyn.test", "n2.svc.dyn.test", 4402}
        ],
        @zone_opts
      )

    on_exit(fn -> DnsServer.stop_and_clean(dns) end)
    ns = DnsServer.nameserver(dns)

    # Name mode, and this node missing from the service: non-zero, and the port is the name's.
    {text, status} =
      doctor(
        ["--node", "app-4401@127.0.0.1", "--service", "svc.dyn.test"],
        %{"DYNAMIC_SRV_PORT_MODE" => "name", "DYNAMIC_SRV_NAMESERVERS" => ns}
      )

    IO.puts(text)
    assert status == 1

    assert_line(
      text,
      "port mode: name; distribution port: 4401 (from the node name's digits, " <>
        "DYNAMIC_SRV_PORT_MODE=name)"
    )

    assert_line(text, "this node (app-4401@127.0.0.1) is not among the nodes svc.dyn.test lists")

    # A service alone needs no ERL_DIST_PORT: no problem, exit 0.
    {text, status} = doctor(["--service", "svc.dyn.test"], %{"DYNAMIC_SRV_NAMESERVERS" => ns})
    IO.puts(text)
    refute text =~ "ERL_DIST_PORT is not set"
    assert_line(text, "No problems found.")
    assert status == 0

    # A host name where an address is needed: the fix is the line to run.
    {text, status} = doctor(["--service", "svc.dyn.test", "--nameservers", "localhost:8600"], %{})
    IO.puts(text)
    assert status == 1

    assert_line(
      text,
      "cannot query DNS: --nameservers \"localhost:8600\": \"localhost:8600\" is a host name"
    )

    assert_line(text, "fix: run with --nameservers 127.0.0.1:8600")
    refute text =~ "fix the variable named above"
  end

  # As an operator runs it, in this project, with a clean environment of DynamicSrv variables.
  defp doctor(args, env) do
    clean =
      for var <- ~w(ERL_DIST_PORT DYNAMIC_SRV_NAMESERVERS DYNAMIC_SRV_PORT_MODE),
          into: %{},
          do: {var, nil}

    System.cmd(System.find_executable("mix"), ["dynamic_srv.doctor" | args],
      env: Map.merge(Map.merge(clean, %{"MIX_ENV" => "test"}), env) |> Enum.to_list(),
      cd: Path.expand("../..", __DIR__),
      stderr_to_stdout: true
    )
  end
end
