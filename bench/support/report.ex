defmodule DynamicSrv.Bench.Report do
  @moduledoc false
  # Renders the results as Markdown (printed, and written between the markers of
  # BENCHMARKS.md).

  @begin "<!-- bench:results:begin (written by ./scripts/bench; edits here are overwritten) -->"
  @finish "<!-- bench:results:end -->"

  def markers, do: {@begin, @finish}

  def render(sections, info) do
    goals = Enum.flat_map(sections, & &1.goals)

    [
      "## Results\n\n",
      "Run #{info.started} on #{info.machine}; #{info.software}. ",
      "Load average #{info.load_before} before and #{info.load_after} after the run; the machine ",
      "also ran other work at times, so compare figures within a row (same run, arms interleaved) ",
      "rather than across runs. Run time #{info.elapsed}.#{info.extra}\n\n",
      "### Goals\n\n",
      table(
        ["Goal", "Measured", "Met"],
        Enum.map(goals, fn {goal, value, met} ->
          [goal, value, if(met, do: "yes", else: "**no**")]
        end)
      ),
      Enum.map(sections, &section/1)
    ]
    |> IO.iodata_to_binary()
  end

  defp section(%{failed: reason, title: title}) do
    "\n### #{title}\n\n**Failed in this run:** #{reason}\n"
  end

  defp section(s) do
    notes = Enum.map(s.notes, &["\n", &1, "\n"])
    ["\n### ", s.title, "\n\n", table(s.columns, s.rows), notes]
  end

  def table(columns, rows) do
    header = ["| ", Enum.join(columns, " | "), " |\n"]
    align = ["|", Enum.map_join(columns, "|", fn _ -> "---" end), "|\n"]
    body = Enum.map(rows, fn row -> ["| ", Enum.join(row, " | "), " |\n"] end)
    [header, align, body]
  end

  @doc """
  For a run of some sections only (`--only ... --write`): puts them into the results already
  between the markers of `path`, leaving the other sections and their goals as they were. A
  section replaces the one with the same number (`### 8.`), else it is appended; its goal rows
  replace those with the same goal text. Each says when it ran, as the header is the full run's.
  """
  def merge(path, sections, info) do
    text = File.read!(path)

    [before, rest] = String.split(text, @begin, parts: 2) |> ensure_two("no #{@begin} in #{path}")

    [old, tail] = String.split(rest, @finish, parts: 2) |> ensure_two("no #{@finish} in #{path}")
    [head | blocks] = String.split(old, "\n### ")
    {goals_block, blocks} = List.pop_at(blocks, 0)
    true = String.starts_with?(goals_block, "Goals\n") || raise "no Goals table in #{path}"

    new_goals = Enum.flat_map(sections, & &1.goals)
    replaced = MapSet.new(new_goals, fn {goal, _, _} -> goal end)

    kept =
      goals_block
      |> String.split("\n")
      |> Enum.filter(&String.starts_with?(&1, "| "))
      |> Enum.drop(1)
      |> Enum.reject(fn row ->
        MapSet.member?(replaced, row |> String.split(" | ") |> hd() |> String.trim_leading("| "))
      end)

    added =
      Enum.map(new_goals, fn {g, v, met} ->
        "| #{g} | #{v} | #{if met, do: "yes", else: "**no**"} |"
      end)

    goals =
      "Goals\n\n| Goal | Measured | Met |\n|---|---|---|\n" <>
        Enum.join(kept ++ added, "\n") <> "\n"

    stamp =
      "Run on its own (`--only`) #{info.started}, load average #{info.load_before} before and #{info.load_after} after, #{info.elapsed}."

    blocks =
      Enum.reduce(sections, blocks, fn s, blocks ->
        s = %{s | notes: s.notes ++ [stamp]}
        new = s |> section() |> IO.iodata_to_binary() |> String.replace_prefix("\n### ", "")
        number = s.title |> String.split(" ") |> hd()

        case Enum.find_index(blocks, &String.starts_with?(&1, number <> " ")) do
          nil -> blocks ++ [new]
          i -> List.replace_at(blocks, i, new)
        end
      end)

    blocks = Enum.map(blocks, &(String.trim_trailing(&1) <> "\n"))
    results = Enum.join([String.trim_trailing(head) <> "\n", goals | blocks], "\n### ")
    File.write!(path, before <> @begin <> results <> "\n" <> @finish <> tail)
  end

  defp ensure_two([_, _] = parts, _why), do: parts
  defp ensure_two(_, why), do: raise(why)

  @doc "Replaces the text between the markers of `path` (appends the markers if missing)."
  def write(path, results, opts \\ []) do
    text = if File.exists?(path), do: File.read!(path), else: "# Benchmarks\n"
    block = [@begin, "\n", results, "\n", @finish] |> IO.iodata_to_binary()

    new =
      case String.split(text, @begin, parts: 2) do
        [before, rest] ->
          case String.split(rest, @finish, parts: 2) do
            [old, tail] ->
              results = carry_over(old, results, Keyword.get(opts, :keep, []))
              before <> IO.iodata_to_binary([@begin, "\n", results, "\n", @finish]) <> tail

            [_] ->
              before <> block <> "\n"
          end

        [_] ->
          String.trim_trailing(text) <> "\n\n" <> block <> "\n"
      end

    File.write!(path, new)
  end

  # `keep`: `{number, goal_prefix}` of sections this run did not run (e.g. `{"10.", "Scale"}`):
  # their blocks and goal rows of the old results stay.
  defp carry_over(old, results, keep) do
    blocks = String.split(old, "\n### ")

    Enum.reduce(keep, results, fn {number, goal_prefix}, results ->
      kept = Enum.find(blocks, &String.starts_with?(&1, number <> " "))

      if kept == nil or String.contains?(results, "\n### " <> number <> " ") do
        results
      else
        rows =
          for "| " <> _ = row <- String.split(old, "\n"), goal_row?(row, goal_prefix), do: row

        [head, rest] = String.split(results, "|---|---|---|\n", parts: 2)

        {goals, others} =
          rest |> String.split("\n") |> Enum.split_while(&String.starts_with?(&1, "| "))

        body = Enum.join(goals ++ rows ++ others, "\n") |> String.trim_trailing()
        head <> "|---|---|---|\n" <> body <> "\n\n### " <> String.trim_trailing(kept) <> "\n"
      end
    end)
  end

  defp goal_row?(row, prefix), do: String.starts_with?(row, "| " <> prefix)

  def machine do
    cpu =
      case File.read("/proc/cpuinfo") do
        {:ok, text} ->
          case Regex.run(~r/model name\s*:\s*(.+)/, text) do
            [_, model] -> String.trim(model)
            _ -> "unknown CPU"
          end

        _ ->
          "unknown CPU"
      end

    mem =
      case File.read("/proc/meminfo") do
        {:ok, text} ->
          case Regex.run(~r/MemTotal:\s+(\d+) kB/, text) do
            [_, kb] -> "#{div(String.to_integer(kb), 1024 * 1024)} GB RAM"
            _ -> ""
          end

        _ ->
          ""
      end

    {kernel, 0} = System.cmd("uname", ["-sr"])
    "#{cpu}, #{System.schedulers_online()} cores, #{mem}, #{String.trim(kernel)}"
  end

  def software do
    otp = :erlang.system_info(:otp_release)
    erts = :erlang.system_info(:version)
    rust = version("rustc", ["--version"])
    dnsmasq = version("/usr/sbin/dnsmasq", ["--version"])

    "Erlang/OTP #{otp} (erts #{erts}), Elixir #{System.version()}, #{rust}, #{dnsmasq}"
  end

  defp version(cmd, args) do
    exe = System.find_executable(cmd) || (File.exists?(cmd) && cmd)

    if exe do
      case System.cmd(exe, args, stderr_to_stdout: true) do
        {out, 0} -> out |> String.split("\n") |> hd() |> String.trim()
        _ -> cmd
      end
    else
      "#{cmd} (not found)"
    end
  end

  def loadavg do
    case File.read("/proc/loadavg") do
      {:ok, text} -> text |> String.split(" ") |> Enum.take(3) |> Enum.join(" ")
      _ -> "?"
    end
  end
end
