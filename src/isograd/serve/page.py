"""The one page of `isograd serve` (``GET /``): ask a question, see how sure the answer is.

The page posts the question as one user message to ``/v1/chat/completions`` (greedy, with the
per-token profile) and shows the answer with each token shaded by its epistemic term
σ²‖∇θ p_t‖² (relative to the answer's largest; the numbers on hover), then the answer's p,
epistemic, aleatoric and total, and the detector's verdict when one is loaded.
"""

from __future__ import annotations

import html
import json

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>isograd serve</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } .sub { color: #666; margin-top: 0; }
textarea { width: 100%; font: inherit; padding: .5rem; box-sizing: border-box; }
button { font: inherit; padding: .4rem 1.2rem; margin-top: .5rem; }
#answer { font-size: 1.2rem; margin: 1rem 0; padding: .8rem; border: 1px solid #ddd;
          border-radius: 6px; min-height: 1.5rem; white-space: pre-wrap; }
.tok { border-radius: 3px; }
table { border-collapse: collapse; } td { padding: .2rem 1rem .2rem 0; }
td.v { font-family: ui-monospace, monospace; }
#error { color: #b00; } .legend { color: #666; font-size: .85rem; }
</style></head><body>
<h1>isograd serve</h1>
<p class="sub">Model <b id="model">__MODEL__</b>: each answer with its uncertainty from gradient
norms (epistemic &sigma;&sup2;&#8214;&nabla;&theta; p&#8214;&sup2;, aleatoric p(1&minus;p)).</p>
<textarea id="question" rows="3" placeholder="Ask a question"></textarea>
<div __KEYSTYLE__><input id="key" type="password" placeholder="API key"></div>
<button id="ask">Ask</button>
<div id="answer"></div>
<p class="legend">Token shading: its epistemic term relative to the answer's largest
(hover a token for p<sub>t</sub>, epistemic and aleatoric).</p>
<table id="summary" hidden>
<tr><td>p</td><td class="v" id="p"></td></tr>
<tr><td>epistemic</td><td class="v" id="epistemic"></td></tr>
<tr><td>aleatoric</td><td class="v" id="aleatoric"></td></tr>
<tr><td>total</td><td class="v" id="total"></td></tr>
<tr><td>detector</td><td class="v" id="verdict"></td></tr>
</table>
<p id="error"></p>
<script>
const MODEL = __MODEL_JSON__;
const fmt = x => (Math.abs(x) >= 0.001 || x === 0) ? x.toFixed(4) : x.toExponential(3);
async function ask() {
  const q = document.getElementById('question').value.trim();
  const out = document.getElementById('answer');
  const err = document.getElementById('error');
  if (!q) return;
  err.textContent = ''; out.textContent = '\\u2026';
  document.getElementById('summary').hidden = true;
  const headers = {'Content-Type': 'application/json'};
  const key = document.getElementById('key').value;
  if (key) headers['Authorization'] = 'Bearer ' + key;
  const r = await fetch('/v1/chat/completions', {method: 'POST', headers, body: JSON.stringify({
    model: MODEL, messages: [{role: 'user', content: q}], temperature: 0, max_tokens: 64,
    token_uncertainty: true})});
  const body = await r.json();
  if (!r.ok) { out.textContent = ''; err.textContent = body.error.message; return; }
  const u = body.choices[0].uncertainty;
  out.textContent = '';
  const top = Math.max(...u.tokens.map(t => t.epistemic), 1e-300);
  for (const t of u.tokens) {
    const s = document.createElement('span');
    s.className = 'tok'; s.textContent = t.text;
    s.style.background = `rgba(220, 60, 40, ${(0.75 * t.epistemic / top).toFixed(3)})`;
    s.title = `p_t ${fmt(t.p)}, epistemic ${fmt(t.epistemic)}, aleatoric ${fmt(t.aleatoric)}`;
    out.appendChild(s);
  }
  if (u.scored_stop_token) out.title = 'empty answer: the scores are of its stop token';
  for (const k of ['p', 'epistemic', 'aleatoric', 'total'])
    document.getElementById(k).textContent = fmt(u[k]);
  document.getElementById('verdict').textContent = ('p_error' in u)
    ? `${u.abstain ? 'abstain' : 'answer'} (P(wrong) ${fmt(u.p_error)})` : 'none loaded';
  document.getElementById('summary').hidden = false;
}
document.getElementById('ask').addEventListener('click', () => ask().catch(e => {
  document.getElementById('error').textContent = String(e); }));
</script></body></html>
"""


def page_html(model_name: str, *, api_key: bool) -> str:
    """The page's HTML for the served model (with a key field when the server needs one)."""
    return (_PAGE.replace("__MODEL_JSON__", json.dumps(model_name).replace("<", "\\u003c"))
            .replace("__MODEL__", html.escape(model_name))
            .replace("__KEYSTYLE__", "" if api_key else 'hidden'))
