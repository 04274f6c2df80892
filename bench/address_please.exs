# Only section 1 of ./scripts/bench (address_please/3 latency, side by side with the classic
# module, stock epmd and one bare SRV query), printed; BENCHMARKS.md is left alone.
#
#   MIX_ENV=test mix run bench/address_please.exs
#
# (./scripts/bench --only latency does the same and also cleans up after a crash.)
Code.require_file("support/load.exs", __DIR__)

{:ok, _} = Application.ensure_all_started(:libcluster_dynamic_srv)
# As ./scripts/bench does: time the lookups, not the console printing their debug events.
Logger.configure(level: :error)

sections = DynamicSrv.Bench.Latency.run()

for section <- sections do
  IO.puts(["\n### ", section.title, "\n"])
  IO.puts(DynamicSrv.Bench.Report.table(section.columns, section.rows))
  Enum.each(section.notes, &IO.puts/1)
end
