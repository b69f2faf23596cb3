// Copy buttons beside shortened tokens: the full value goes to the clipboard.
document.addEventListener("click", function (event) {
  const button = event.target.closest(".noti-copy");
  if (!button) return;
  event.preventDefault();
  const value = button.getAttribute("data-copy") || "";
  const done = function () {
    button.classList.add("noti-copied");
    button.setAttribute("title", "Copied");
    setTimeout(function () { button.classList.remove("noti-copied"); button.setAttribute("title", "Copy the full token"); }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(value).then(done);
  } else {
    const area = document.createElement("textarea");
    area.value = value;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }
});
