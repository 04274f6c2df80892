defmodule DynamicSrv.Test.Readme do
  @moduledoc false
  # The README's pastes, as the packaging test runs them: each is the first fenced block after
  # a `<!-- packaging-test: NAME -->` marker (invisible on GitHub and hexdocs), with the list
  # indentation removed. Reading them from the README keeps the docs and the test in step.

  @path Path.expand("../../README.md", __DIR__)

  def path, do: @path
  def text, do: File.read!(@path)

  @doc "The code of the block after marker `name`; raises if there is none."
  def block!(name, text \\ text()) do
    marker = "<!-- packaging-test: #{name} -->"

    case String.split(text, marker, parts: 2) do
      [_, after_marker] ->
        case Regex.run(~r/\A\s*^([ \t]*)```[a-z]*\n(.*?)^[ \t]*```/ms, after_marker) do
          [_, indent, code] -> dedent(code, indent)
          nil -> raise "no fenced block right after #{marker} in README.md"
        end

      [_] ->
        raise "README.md has no #{marker}"
    end
  end

  @doc "Marker names in the README, in order."
  def markers(text \\ text()) do
    for [_, name] <- Regex.scan(~r/<!-- packaging-test: (\S+) -->/, text), do: name
  end

  @doc "Targets of the README's relative links (no scheme, no bare #anchor)."
  def relative_links(text \\ text()) do
    for [_, target] <- Regex.scan(~r/\]\(([^)\s]+)\)/, text),
        not String.contains?(target, "://"),
        not String.starts_with?(target, "#"),
        not String.starts_with?(target, "mailto:"),
        do: target |> String.split("#") |> hd()
  end

  defp dedent(code, indent) do
    code
    |> String.split("\n")
    |> Enum.map_join("\n", &String.replace_prefix(&1, indent, ""))
  end
end
