#!/usr/bin/python3
"""Renders a Helm chart's templates for the subset of Go templates pgshard's chart uses, so
the chart can be checked without Helm (no registry or download here): actions `{{ }}` with
`-` whitespace trimming; `if`/`else`/`end`; values `.Values.a.b`, `.Release.Name`,
`.Release.Namespace`, `.Chart.Name`, `.Chart.AppVersion`, "strings" and numbers; pipelines
`|` through `default`, `quote`, `toYaml`, `indent`, `nindent` and `sha256sum`. Anything
else is an error, so a template using more than this fails the check instead of rendering
wrongly.
   helm_render.py CHART_DIR [--set a.b=value]...   prints the documents, `---` between"""
import hashlib
import os
import re
import shlex
import sys

import yaml

ACTION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.S)


class TemplateError(Exception):
    pass


def tokenize(text):
    """Yields ('text', s) and ('action', s) with Go's trimming applied."""
    out, pos = [], 0
    for m in ACTION.finditer(text):
        chunk = text[pos:m.start()]
        if m.group(1) == "-" and m.group(2).startswith(" "):
            chunk = chunk.rstrip(" \t\r\n")
        out.append(["text", chunk])
        out.append(["action", m.group(2).strip(), m.group(3) == "-" and m.group(2).endswith(" ")])
        pos = m.end()
    out.append(["text", text[pos:]])
    for i, tok in enumerate(out):  # `-}}` trims the text after it
        if tok[0] == "action" and tok[2] and i + 1 < len(out):
            out[i + 1][1] = out[i + 1][1].lstrip(" \t\r\n")
    return out


def parse(tokens):
    """A tree of text, expression and if nodes."""
    root = []
    stack = [root]
    for tok in tokens:
        if tok[0] == "text":
            stack[-1].append(("text", tok[1]))
            continue
        words = tok[1]
        if words.startswith("/*"):
            continue
        if words.startswith("if "):
            node = ["if", words[3:].strip(), [], []]
            stack[-1].append(node)
            stack.append(node[2])
        elif words == "else":
            if len(stack) < 2:
                raise TemplateError("else outside if")
            stack.pop()
            parent = stack[-1][-1]
            stack.append(parent[3])
        elif words == "end":
            if len(stack) < 2:
                raise TemplateError("end without if")
            stack.pop()
        elif re.match(r"^(range|with|define|template|include|block)\b", words):
            raise TemplateError(f"unsupported action: {words}")
        else:
            stack[-1].append(("expr", words))
    if len(stack) != 1:
        raise TemplateError("if without end")
    return root


def lookup(path, scope):
    value = scope
    for part in path.split(".")[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def to_yaml(v):
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def indent(n, s):
    pad = " " * int(n)
    return pad + str(s).replace("\n", "\n" + pad)


FUNCS = {
    "quote": lambda v: '"' + str("" if v is None else v).replace('"', '\\"') + '"',
    "toYaml": to_yaml,
    "indent": lambda n, s: indent(n, s),
    "nindent": lambda n, s: "\n" + indent(n, s),
    "default": lambda d, v: v if v not in (None, "", [], {}, False, 0) else d,
    "sha256sum": lambda s: hashlib.sha256(str(s).encode()).hexdigest(),
}


def argument(word, scope):
    if word.startswith("."):
        return lookup(word, scope)
    if word.startswith('"'):
        return shlex.split(word)[0]
    if re.match(r"^-?\d+$", word):
        return int(word)
    raise TemplateError(f"unsupported argument: {word}")


def evaluate(pipeline, scope):
    value, first = None, True
    for command in pipeline.split("|"):
        words = shlex.split(command, posix=False)
        if not words:
            raise TemplateError(f"empty command in: {pipeline}")
        head = words[0]
        if head in FUNCS:
            args = [argument(w, scope) for w in words[1:]] + ([] if first else [value])
            value = FUNCS[head](*args)
        elif first and len(words) == 1:
            value = argument(head, scope)
        else:
            raise TemplateError(f"unsupported command: {command.strip()}")
        first = False
    return value


def truthy(v):
    return v not in (None, False, 0, "", [], {})


def render_nodes(nodes, scope):
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            v = evaluate(node[1], scope)
            out.append("" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
        else:
            out.append(render_nodes(node[2] if truthy(evaluate(node[1], scope)) else node[3], scope))
    return "".join(out)


def set_value(values, assignment):
    path, _, raw = assignment.partition("=")
    keys = path.split(".")
    for k in keys[:-1]:
        values = values.setdefault(k, {})
    values[keys[-1]] = yaml.safe_load(raw)


def render(chart_dir, sets=(), release="pgshard", namespace="default"):
    """{template file name: rendered text} for every template of the chart."""
    chart = yaml.safe_load(open(os.path.join(chart_dir, "Chart.yaml")))
    values = yaml.safe_load(open(os.path.join(chart_dir, "values.yaml"))) or {}
    for s in sets:
        set_value(values, s)
    scope = {"Values": values, "Release": {"Name": release, "Namespace": namespace},
             "Chart": {"Name": chart["name"], "Version": chart["version"],
                       "AppVersion": chart.get("appVersion", "")}}
    out = {}
    tdir = os.path.join(chart_dir, "templates")
    for name in sorted(os.listdir(tdir)):
        if name.endswith((".yaml", ".yml")):
            text = open(os.path.join(tdir, name)).read()
            try:
                out[name] = render_nodes(parse(tokenize(text)), scope)
            except TemplateError as e:
                raise TemplateError(f"{name}: {e}") from None
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    for name, text in render(args[0], sets).items():
        if text.strip():
            print(f"---\n# Source: {name}\n{text.strip()}")
