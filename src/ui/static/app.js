// pasarela dashboard: asks before a form changes a label, and requires the "force" box when
// the label being moved is protected. The server checks both again; this only saves a trip.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const move = document.getElementById("move-label");
  if (move) {
    const protectedLabels = (move.dataset.protected || "").split(" ").filter(Boolean);
    const labelInput = move.querySelector("input[name=label]");
    const force = move.querySelector("input[name=force]");
    const sync = () => {
      const isProtected = protectedLabels.includes(labelInput.value.trim());
      force.required = isProtected;
    };
    labelInput.addEventListener("input", sync);
    sync();
    move.addEventListener("submit", (event) => {
      const label = labelInput.value.trim();
      const version = move.querySelector("select[name=version]").value;
      const question = `Move label ${label} of ${move.dataset.prompt} to version ${version}?`;
      if (!window.confirm(question)) {
        event.preventDefault();
      }
    });
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
});
