"use strict";
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  try {
    const me = await HFL.api("POST", "api/login", {
      username: document.getElementById("username").value,
      password: document.getElementById("password").value,
    });
    window.location.href = me.role === "admin" ? "admin" : "label";
  } catch (e) {
    error.textContent = e.message;
  }
});
