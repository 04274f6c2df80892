defmodule DynamicSrv.Epmd.Refusal do
  @moduledoc false
  # How the epmd module refuses a bad configuration: one line on the emulator's stderr and,
  # when distribution was being started by the VM's own boot (`-name`/`-sname`, kernel
  # starting net_sup), an exit with status 1 and nothing else: no supervisor reports, no
  # "Kernel pid terminated", no erl_crash.dump (`erlang:halt/1` with an integer status never
  # writes one). Returning the error there would only bury the line under those, and from
  # listen_port_please/2 OTP has no error clause at all (`case_clause`).
  #
  # Distribution started later (`Node.start/2`, `net_kernel:start/1` from `-eval` or an
  # application) gets the line and the error back; the VM stays up.

  @exit_status 1

  @doc "Writes `line` on stderr; halts the VM with status 1 if its boot is starting distribution."
  @spec refuse(String.t()) :: :ok
  def refuse(line) do
    :erlang.display_string(String.to_charlist(line <> "\n"))
    if boot_distribution?(), do: :erlang.halt(@exit_status)
    :ok
  end

  # init answers get_status while the boot script runs (the boot script runs in its own
  # process): `{:starting, _}` until the boot script, `-s` and `-eval` are done. With
  # `-name`/`-sname` kernel starts net_sup during boot, and a failure there ends the VM
  # anyway; without them, net_sup is started only by a call we must not kill.
  # `-kernel start_distribution false` keeps a named VM from starting distribution at boot:
  # it is then started by a call (Node.start/2) while init may still be starting.
  defp boot_distribution? do
    match?({:starting, _}, :init.get_status()) and
      (match?({:ok, _}, :init.get_argument(:name)) or
         match?({:ok, _}, :init.get_argument(:sname))) and
      :application.get_env(:kernel, :start_distribution) != {:ok, false}
  end
end
