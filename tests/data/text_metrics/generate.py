"""Reference ROUGE-L and BLEU scores for pasarela's eval assertions (src/evals/text_metrics.rs).

Regenerate with:

    python3 -m venv /tmp/metrics-venv
    /tmp/metrics-venv/bin/pip install rouge-score==0.1.2 sacrebleu==2.6.0
    /tmp/metrics-venv/bin/python tests/data/text_metrics/generate.py > tests/data/text_metrics/references.json

ROUGE-L is rouge-score's `RougeScorer(["rougeL"], use_stemmer=False)` F-measure; BLEU is
sacrebleu's `sentence_bleu(candidate, [reference])` with its defaults (13a, exp smoothing),
divided by 100.
"""

import json

import sacrebleu
from rouge_score import rouge_scorer

PAIRS = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    ("The quick brown fox jumps over the lazy dog.", "The fast brown fox leaped over a lazy dog!"),
    ("Hello, world!", "hello world"),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("It costs $3.50, i.e. 3,500 cents (approx.).", "It costs $3.50 - about 3,500 cents."),
    ("The meeting is on 2024-05-01 at 10:30.", "Meeting: 2024-05-01, 10:30 am."),
    ("Completely unrelated sentence here.", "Nothing in common whatsoever"),
    ("Short", "Short"),
    ("Two words", "two words here"),
    ("Café au lait, s'il vous plaît.", "Cafe au lait please"),
    ("東京は日本の首都です。", "東京は日本の首都です。"),
    ("Use `git commit -m \"msg\"` & push <branch>.", "Use git commit -m msg and push the branch."),
    ("", "something"),
    ("one two three four five six seven eight", "one two three four"),
    ("one two three four", "one two three four five six seven eight"),
    ("a b c d e f", "f e d c b a"),
    ("The model returned a JSON object with keys name and age.",
     "The model returned JSON with the keys name and age."),
]

scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
out = []
for reference, candidate in PAIRS:
    rouge = scorer.score(reference, candidate)["rougeL"].fmeasure
    bleu = sacrebleu.sentence_bleu(candidate, [reference]).score / 100.0
    out.append({"reference": reference, "candidate": candidate, "rouge_l": rouge, "bleu": bleu})
print(json.dumps(out, ensure_ascii=False, indent=1))
