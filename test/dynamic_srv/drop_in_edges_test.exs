defmodule DynamicSrv.DropInEdgesTest do
  # Edges of the drop-in behaviour found by an adversarial review (issue 14): a flapping
  # absent service, inetrc files that name a resolv file, garbage or crowding starting
  # members, and a doctor that checked nothing or was given a name that is not one.
  use ExUnit.Case, async: false

  alias DynamicSrv.Cluster.Misconfig

  describe "an absent service that flaps" do
    test "absent / listed / absent within 5 min warns only once" do
      s = Misconfig.new()
      {s, :warn} = Misconfig.absent(s, true, 0)
      {s, _} = Misconfig.absent(s, false, 5_000)
      assert {_s, :none} = Misconfig.absent(s, true, 10_000)
    end
  end

  describe "an inetrc that names a resolv file" do
    setup do
      dir = Path.join(System.tmp_dir!(), "drop-in-inetrc-#{System.unique_integer([:positive])}")
      File.mkdir_p!(dir)
      on_exit(fn -> File.rm_rf!(dir) end)
      resolv = Path.join(dir, "consul-resolv.conf")
      File.write!(resolv, "nameserver 127.0.0.9\n")
      %{dir: dir, resolv: resolv}
    end

    # OTP's :inet_db uses 127.0.0.9:53 for both forms (checked with
    # `erl -kernel inetrc '"F"' -eval 'inet_db:res_option(nameservers)'`), and so do we.
    for form <- ["{resolv_conf, ~s}.", "{file, resolv, ~s}."] do
      test "#{form}", %{dir: dir, resolv: resolv} do
        file = Path.join(dir, "inetrc")
        File.write!(file, :io_lib.format(unquote(form), [inspect(resolv)]) |> to_string())
        assert {:ok, ^file, "127.0.0.9:53"} = DynamicSrv.Nameservers.inetrc(file)
      end
    end
  end

  describe "starting members" do
    defmodule Stub do
      def connect(_node), do: true
      def disconnect(_node), do: true
      def list, do: []
      def resolver(_), do: [{0, 0, 4370, ~c"real-1.svc.test"}, {0, 0, 4371, ~c"real-2.svc.test"}]
    end

    test "garbage names are not taken as members, with one warning" do
      log =
        ExUnit.CaptureLog.capture_log(fn ->
          {:ok, pid} =
            DynamicSrv.Cluster.start_link(
              service: "svc.test",
              resolver: fn _ -> [] end,
              polling_interval: 60_000,
              connect: {Stub, :connect, []},
              disconnect: {Stub, :disconnect, []},
              list_nodes: {Stub, :list, []},
              initial_members: [nil, true, "", "a@b@c", "no-at-sign", " x@y ", "ok@h.test"]
            )

          assert DynamicSrv.Cluster.members(pid) == [:"ok@h.test"]
          GenServer.stop(pid)
        end)

      assert log =~ "ignoring 5 of the starting members of svc.test"
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

      assert :"real-1@svc.test" in members and :"real-2@svc.test" in members,
             inspect(members)
    end
  end

  describe "the doctor" do
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
      # Not "No problems found." (a deploy gate would pass) when nothing was looked at.
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
      # No query was sent: the name is the mistake, not the server's answer.
      refute text =~ "malformed or unusable answer", text
    end
  end
end
