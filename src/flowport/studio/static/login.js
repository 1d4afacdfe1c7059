"use strict";
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const error = document.getElementById("login-error");
  error.textContent = "";
  const response = await fetch("/api/v1/sessions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({ token: form.token.value }),
  });
  if (response.ok) {
    location.assign(form.dataset.next || "/studio/endpoints");
  } else {
    const body = await response.json().catch(() => ({}));
    error.textContent = (body.error && body.error.message) || "Sign-in failed.";
    form.token.focus();
  }
});
