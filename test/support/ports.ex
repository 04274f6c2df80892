defmodule DynamicSrv.Test.Ports do
  @moduledoc false

  @doc "A loopback port that is free for both TCP and UDP right now."
  def free do
    {:ok, tcp} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, reuseaddr: true)
    {:ok, port} = :inet.port(tcp)

    case :gen_udp.open(port, ip: {127, 0, 0, 1}) do
      {:ok, udp} ->
        :gen_udp.close(udp)
        :gen_tcp.close(tcp)
        port

      {:error, _} ->
        :gen_tcp.close(tcp)
        free()
    end
  end
end
