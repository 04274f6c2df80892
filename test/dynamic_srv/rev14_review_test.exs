defmodule DynamicSrv.Rev14ReviewTest do
  # rev14 adversarial review of issue 14: failing regression tests for findings.
  # Each test states the observed behaviour; product code is not changed here.
  use ExUnit.Case, async: false

  alias DynamicSrv.Cluster.{Misconfig, Seed}

  describe "finding: NXDOMAIN warning is not rate-limited when the answer flaps" do
    test "absent / listed / absent within 5 min warns only once" do
      s = Misconfig.new()
      {s, :warn} = Misconfig.absent(s, true, 0)
      {s, _} = Misconfig.absent(s, false, 5_000)
      # Observed: :warn again 10 s later (every other poll while it flaps).
      assert {_s, :none} = Misconfig.absent(s, true, 10_000)
    end
  end

  describe "finding: inetrc that points OTP at a resolv file is ignored" do
    setup do
      dir = Path.join(System.tmp_dir!(), "rev14-inetrc-#{System.unique_integer([:positive])}")
      File.mkdir_p!(dir)
      on_exit(fn -> File.rm_rf!(dir) end)
      resolv = Path.join(dir, "consul-resolv.conf")
      File.write!(resolv, "nameserver 127.0.0.9\n")
      %{dir: dir, resolv: resolv}
    end

    # OTP's :inet_db uses 127.0.0.9:53 for both forms (checked with
    # `erl -kernel inetrc '"F"' -eval 'inet_db:res_option(nameservers)'`); the package falls
    # back to /etc/resolv.conf and says no inetrc nameserver is set.
    for form <- ["{resolv_conf, ~s}.", "{file, resolv, ~s}."] do
      test "#{form}", %{dir: dir, resolv: resolv} do
        file = Path.join(dir, "inetrc")
        File.write!(file, :io_lib.format(unquote(form), [inspect(resolv)]) |> to_string())
        assert {:ok, ^file, "127.0.0.9:53"} = DynamicSrv.Nameservers.inetrc(file)
      end
    end
  end

  describe "finding: strategy meta seeds are not validated" do
    test "garbage names are not taken as members" do
      assert {:ok, names} = Seed.nodes([nil, true, "", "a@b@c", "no-at-sign", " x@y "])
      # Observed: ["", "true", "a@b@c", "no-at-sign", " x@y "], each later connected to.
      assert names == []
    end

    defmodule Stub do
      def connect(_node), do: true
      def disconnect(_node), do: true
      def list, do: []
      def resolver(_), do: [{0, 0, 4370, ~c"real-1.svc.test"}, {0, 0, 4371, ~c"real-2.svc.test"}]
    end

    test "seeds never push out the nodes DNS lists (max_nodes)" do
      garbage = for i <- 1..50, do: "garbage#{i}@nowhere"

      {:ok, pid} =
        DynamicSrv.Cluster.start_link(
          service: "svc.test",
          resolver: &Stub.resolver/1,
          polling_interval: 60_000,
          connect: {Stub, :connect, []},
          disconnect: {Stub, :disconnect, []},
          list_nodes: {Stub, :list, []},
          initial_members: garbage,
          max_nodes: 10
        )

      on_exit(fn -> if Process.alive?(pid), do: GenServer.stop(pid) end)
      :ok = DynamicSrv.Cluster.poll_now(pid)
      members = DynamicSrv.Cluster.members(pid)
      # Observed: ten garbage seeds, neither real node, and the warning
      # "svc.test lists 2 nodes beyond max_nodes=10" (it lists 2 nodes in all).
      assert :"real-1@svc.test" in members and :"real-2@svc.test" in members,
             inspect(members)
    end
  end

  describe "finding: doctor" do
    @dead "127.0.0.1:9"

    test "reports nothing checked when no service is given or configured" do
      report =
        DynamicSrv.Diagnosis.run(
          services: [],
          peers: [],
          family: :inet,
          naming: :service_prefix,
          nameservers: @dead,
          nameservers_source: "--nameservers",
          topologies: []
        )

      text = Enum.join(DynamicSrv.Diagnosis.format(report), "\n")
      # Observed: "No problems found." (mix dynamic_srv.doctor exits 0) having queried no
      # service at all, e.g. for a project whose topologies are built in application.ex.
      refute text =~ "No problems found.", text
    end

    test "an invalid --service name is reported as such, not as a bad DNS answer" do
      report =
        DynamicSrv.Diagnosis.run(
          services: ["bad name!"],
          peers: [],
          family: :inet,
          naming: :service_prefix,
          nameservers: @dead,
          nameservers_source: "--nameservers",
          topologies: []
        )

      text = Enum.join(DynamicSrv.Diagnosis.format(report), "\n")
      # Observed: "malformed or unusable answer: unrecognized char" with the fix "the answer
      # from <server> could not be used (malformed, truncated ...)": no query was sent.
      refute text =~ "malformed or unusable answer", text
    end
  end
end
