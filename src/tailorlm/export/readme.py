"""README.md of an export: a model card whose snippet uses the folder as the model its run trained.

The snippet loads the folder with transformers (a merged model, or full fine-tuning's whole model),
PEFT (an adapter in PEFT's format, on its base model) or tailorlm (a bottleneck adapter), reads
tailorlm.json (export/use.py) and renders an input as training rendered it: the prompt template
filled, then the chat template's system and user turns (or the plain wrapper), BOS first where the
tokenizer puts one. A classifier then scores each label word (`classify` returns the label and every
label's probability: softmax over the labels' summed log-probabilities, or over the head's logits);
anything else generates (`answer`). Where the adapter's base is a Hub id, a second line points it at
the local folder the run used, which is what works offline. The snippet is plain Python that a test
runs as written, paths substituted.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text
from ..methods.card import NOTES
from ..models.defaults import embedded_name

EXAMPLE = "The flight was delayed for three hours and nobody told us why."
FOLDER = '"path/to/this/folder"'       # the snippet's placeholder, replaced by whoever runs it
OFFLINE = "# base_path = "             # the commented offline line (uncommented: the local base)

BASE = "base = {auto}.from_pretrained(base_path{extra})\n{pad}"
LOAD = {  # loader -> (imports, how the model is built from `folder` (and `base_path`))
    "transformers": ("", "model = {auto}.from_pretrained(folder).eval()\n"),
    "peft": ("from peft import PeftModel\n", BASE + "model = PeftModel.from_pretrained(base, folder).eval()\n"),
    "bottleneck": ("from tailorlm.methods import bottleneck   # this adapter format is tailorlm's own\n",
                   BASE + "model = bottleneck.load(base, folder).eval()\n"),
}

RENDER = '''
def render(text):
    """The input as training rendered it: the prompt template, then the chat template or plain wrapper."""
    prompt = use["prompt_template"].format(text=text, labels=", ".join(use["labels"] or []))
    if not use["chat_template"]:
        return use["plain_template"].format(prompt=prompt)
    turns = [{"role": "system", "content": use["system"]}] if use["system"] else []
    turns.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
'''
RENDER_AS_IS = {  # formats whose input is not wrapped in the prompt template
    "text": '\ndef render(text):\n    return text\n',
    "chat": ('\ndef render(text):\n    return tokenizer.apply_chat_template([{"role": "user", "content": text}], '
             'tokenize=False, add_generation_prompt=True)\n'),
}
TOKENS = ('\n\ndef tokens(text):\n    return ([tokenizer.bos_token_id] if use["add_bos"] else []) + '
          'tokenizer(text, add_special_tokens=False).input_ids\n')

USE = {  # scoring -> the function that uses the model, and the call the snippet ends with
    "label_likelihood": ('''

@torch.no_grad()
def classify(text):
    """(label, {label: probability}): softmax over each label word's summed log-probability after the prompt."""
    prompt, scores = tokens(render(text)), []
    for label in use["labels"]:
        word = tokenizer(label, add_special_tokens=False).input_ids
        logits = model(input_ids=torch.tensor([prompt + word])).logits[0, -len(word) - 1:-1]
        scores.append(logits.float().log_softmax(-1)[torch.arange(len(word)), word].sum())
    probs = torch.stack(scores).softmax(0)
    return use["labels"][int(probs.argmax())], dict(zip(use["labels"], probs.tolist()))
''', "classify"),
    "head": ('''

@torch.no_grad()
def classify(text):
    """(label, {label: probability}): softmax over the classification head's logits."""
    prompt = use["prompt_template"].format(text=text, labels=", ".join(use["labels"]))
    x = tokenizer(prompt, truncation=True, max_length=use["max_length"], return_tensors="pt")
    probs = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits[0].float().softmax(-1)
    return use["labels"][int(probs.argmax())], dict(zip(use["labels"], probs.tolist()))
''', "classify"),
    None: ('''

@torch.no_grad()
def answer(text, max_new_tokens=64):
    ids = torch.tensor([tokens(render(text))])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
''', "answer"),
}


def loader_of(folder: Path) -> str:
    """transformers, peft or bottleneck: what loads the export in `folder`, read off its files."""
    if (folder / "adapter_config.json").is_file():
        return "peft"
    return "bottleneck" if (folder / "bottleneck.json").is_file() else "transformers"


def _auto(use: dict) -> tuple[str, str]:
    """(transformers Auto class, extra from_pretrained arguments) that load the model `use` describes."""
    if use["task"] != "sequence_classification":
        return "AutoModelForCausalLM", ""
    return "AutoModelForSequenceClassification", f", num_labels={len(use['labels'])}"


def offline_fix(use: dict, folder: Path, out) -> str:
    """What `export` says of an adapter's base: where it is, or, named by a Hub id (which needs the
    network), the line that loads it from its local folder instead."""
    ref, local = use["base_model"]["reference"], use["base_model"]["local"]
    if ref == local:
        return f"the adapter loads onto the base model at {local} (copy it along to use the adapter elsewhere)"
    (auto, extra), loader = _auto(use), loader_of(Path(folder))
    attach = "PeftModel.from_pretrained" if loader == "peft" else f"{loader}.load"
    code = f"{attach}({auto}.from_pretrained({json.dumps(local)}{extra}), {json.dumps(str(out))})"
    return (f"the adapter names its base by the Hub id {ref}, which needs the network. Fix (offline): load the base "
            f"from its local folder, {code} (README.md's snippet has the line; on another machine `tailorlm models "
            f"prepare {embedded_name(local)}` prints the folder)")


def snippet(use: dict, loader: str) -> str:
    """The Python that loads the export and uses it (see the module docstring)."""
    (auto, extra), classify = _auto(use), use["task"] == "sequence_classification"
    imports, build = LOAD[loader]
    pad = "base.config.pad_token_id = tokenizer.pad_token_id\n" if classify else ""
    ref, local = use["base_model"]["reference"], use["base_model"]["local"]
    where = f"{FOLDER}   # the folder this README is in\n"
    if loader != "transformers":
        where += f"base_path = {json.dumps(ref)}   # the base model this adapter was trained on\n"
        if ref != local:
            where += f"{OFFLINE}{json.dumps(local)}   # offline: a local copy of it (here: the one the run used)\n"
    body, call = USE[use["scoring"]]
    render = "" if use["scoring"] == "head" else RENDER_AS_IS.get(use["format"], RENDER) + TOKENS
    return (f"import json\n\nimport torch\n{imports}from transformers import {auto}, AutoTokenizer\n\n"
            f"folder = {where}use = json.load(open(f\"{{folder}}/tailorlm.json\"))   # how training rendered inputs\n"
            f"tokenizer = AutoTokenizer.from_pretrained(folder)\n"
            + build.format(auto=auto, extra=extra, pad=pad) + "\n" + render + body
            + f"\n\nprint({call}({EXAMPLE!r}))\n")


def _about(use: dict, loader: str) -> str:
    """The card's prose: what the model is, how its inputs were rendered, and what loads it."""
    ref, name = use["base_model"]["reference"], embedded_name(use["base_model"]["local"])
    note = NOTES.get(name) or (f"tailorlm's embedded `{name}`" if name else "a local folder; copy it along")
    what = {"transformers": "the whole model (transformers loads it alone)",
            "peft": "a PEFT adapter: it loads onto its base model with PEFT and transformers",
            "bottleneck": "a bottleneck adapter in tailorlm's own format: it loads onto its base model with tailorlm"}
    task = f"A classifier of {', '.join(use['labels'])}" if use["scoring"] else f"A model tuned on {use['format']} data"
    rows = [f"- prompt template: `{use['prompt_template']!r}` (`{{text}}` the input, `{{labels}}` the label words)",
            f"- system message: {use['system']!r}" if use["system"] else "- system message: none",
            "- the tokenizer's chat template wraps it" if use["chat_template"] else
            f"- no chat template: the plain wrapper `{use['plain_template']!r}`"]
    if use["format"] in RENDER_AS_IS and not use["scoring"]:
        rows = [f"- inputs: {'as they are' if use['format'] == 'text' else 'a user turn of the chat template'}"]
    rows.append(f"- max_length: {use['max_length']} tokens")
    if use["scoring"]:
        rows.append("- scored by " + ("the classification head" if use["scoring"] == "head" else
                                      "each label word's log-probability after the prompt"))
    offline = ""
    if loader != "transformers" and ref != use["base_model"]["local"]:
        offline = (f"\n`base_path` names the base by its Hub id, which needs the network. Offline, uncomment the "
                   f"snippet's second `base_path` line: the base's local folder (`tailorlm models prepare {name}` "
                   "prints one on another machine).\n")
    return (f"# {Path(use['run']).name}: {use['method']} fine-tune of {ref}\n\n{task}, trained with tailorlm"
            f" (run `{use['run']}`). Base model: `{ref}` ({note}).\n\nThis folder holds {what[loader]}; "
            f"`tailorlm.json` beside it says how training rendered its inputs, which the model expects again:\n\n"
            + "\n".join(rows) + f"\n{offline}")


def write_readme(folder: Path, use: dict) -> None:
    """README.md in `folder` (replacing the card a method's save wrote there)."""
    folder = Path(folder)
    loader = loader_of(folder)
    library = {"transformers": "transformers", "peft": "peft", "bottleneck": "tailorlm"}[loader]
    pipeline = "text-classification" if use["scoring"] else "text-generation"
    head = (f"---\nbase_model: {use['base_model']['reference']}\nlibrary_name: {library}\n"
            f"pipeline_tag: {pipeline}\ntags: [tailorlm, {use['method']}]\n---\n\n")
    write_text(folder / "README.md", head + _about(use, loader) + "\n## Use it\n\n```python\n"
               + snippet(use, loader) + "```\n")
