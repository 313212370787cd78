"""Bash completion for kampxctl, generated from its argparse parser so it never drifts from
the commands: `source <(kampxctl completion bash)`."""

from __future__ import annotations

import argparse


def _walk(parser: argparse.ArgumentParser, path: str, subs: dict, opts: dict) -> None:
    options: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subs[path] = " ".join(action.choices)
            for name, child in action.choices.items():
                _walk(child, f"{path} {name}", subs, opts)
        elif action.option_strings and action.help != argparse.SUPPRESS:
            options.extend(s for s in action.option_strings if s.startswith("--"))
    opts[path] = " ".join(options)


def bash(parser: argparse.ArgumentParser, prog: str = "kampxctl") -> str:
    subs: dict[str, str] = {}
    opts: dict[str, str] = {}
    _walk(parser, ".", subs, opts)  # "." is the root: bash refuses an empty array key
    fn = "_" + prog.replace("-", "_")

    def assoc(name, table):
        return "\n".join(f'    {name}["{k}"]="{v}"' for k, v in sorted(table.items()))

    return f"""# bash completion for {prog}
{fn}() {{
    local cur prev path="." w i
    local -A subs opts
{assoc("subs", subs)}
{assoc("opts", opts)}
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
        --config|--file) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
    esac
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in
            --config|--file) ((i++)) ;;
            -*) ;;
            *) if [[ " ${{subs[$path]}} " == *" $w "* ]]; then path="$path $w"; fi ;;
        esac
    done
    COMPREPLY=( $(compgen -W "${{subs[$path]}} ${{opts[$path]}}" -- "$cur") )
}}
complete -F {fn} {prog}
"""
