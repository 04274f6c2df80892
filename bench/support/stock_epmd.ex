defmodule DynamicSrv.Bench.StockEpmd do
  @moduledoc false
  # The second baseline: a stock epmd daemon of our own on a free loopback port (started and
  # ended by OS pid), one name registered with ALIVE2_REQ, and the per-connection work of OTP's
  # erl_epmd: `:inet.getaddr/2` on the host, then PORT2_REQ on a new TCP connection to epmd.

  alias DynamicSrv.Bench.Os

  defstruct [:port, :os_pid, :owner, :registrar]

  def start!(name, node_port) do
    epmd = System.find_executable("epmd") || raise "epmd not found"
    port = Os.free_port()
    {owner, os_pid} = Os.spawn_drained(epmd, ["-port", "#{port}", "-address", "127.0.0.1"])
    wait_listening(port, 100)
    registrar = register(port, name, node_port)
    %__MODULE__{port: port, os_pid: os_pid, owner: owner, registrar: registrar}
  end

  def stop(%__MODULE__{} = epmd) do
    send(epmd.registrar, :stop)
    Os.stop_pid(epmd.os_pid)
    Process.exit(epmd.owner, :kill)
    :ok
  end

  @doc "What a stock node does per connection: resolve the host, then ask epmd for the port."
  def address_please(%__MODULE__{port: epmd_port}, name, host, family) do
    with {:ok, ip} <- :inet.getaddr(host, family),
         {:ok, port} <- port_please(epmd_port, name, ip) do
      {:ok, ip, port, 6}
    end
  end

  def port_please(epmd_port, name, ip) do
    name = to_string(name)

    with {:ok, socket} <-
           :gen_tcp.connect(ip, epmd_port, [:binary, packet: 0, active: false], 5_000) do
      :ok = :gen_tcp.send(socket, <<byte_size(name) + 1::16, 122, name::binary>>)
      reply = recv_all(socket, <<>>)
      :gen_tcp.close(socket)

      case reply do
        <<119, 0, port::16, _rest::binary>> -> {:ok, port}
        _ -> {:error, :noport}
      end
    end
  end

  defp recv_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, data} -> recv_all(socket, acc <> data)
      {:error, _closed} -> acc
    end
  end

  # The registration lasts as long as this connection stays open.
  defp register(epmd_port, name, node_port) do
    parent = self()

    pid =
      spawn(fn ->
        {:ok, socket} =
          :gen_tcp.connect({127, 0, 0, 1}, epmd_port, [:binary, packet: 0, active: false])

        name = to_string(name)

        request =
          <<120, node_port::16, 77, 0, 6::16, 6::16, byte_size(name)::16, name::binary, 0::16>>

        :ok = :gen_tcp.send(socket, <<byte_size(request)::16, request::binary>>)
        {:ok, reply} = :gen_tcp.recv(socket, 0, 5_000)
        send(parent, {self(), reply})

        receive do
          :stop -> :gen_tcp.close(socket)
        end
      end)

    receive do
      {^pid, <<tag, 0, _::binary>>} when tag in [121, 118] -> pid
      {^pid, other} -> raise "epmd refused the registration: #{inspect(other)}"
    after
      5_000 -> raise "epmd did not answer the registration"
    end
  end

  defp wait_listening(port, tries) do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 1_000) do
      {:ok, socket} ->
        :gen_tcp.close(socket)

      {:error, _} when tries > 0 ->
        Process.sleep(20)
        wait_listening(port, tries - 1)

      {:error, reason} ->
        raise "epmd did not listen on #{port}: #{reason}"
    end
  end
end
