// The page of the voice2face app: upload or record a voice, show the face and the nearest
// people; enrol and remove people. Plain JavaScript, no external assets.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let recorder = null;

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const retry = response.headers.get("Retry-After");
    const wait = retry ? ` (try again in ${retry} s)` : "";
    throw new Error(`${body.detail || response.statusText}${wait} [${response.status}]`);
  }
  return body;
}

function chosenModel() {
  return $("model").value;
}

async function loadInfo() {
  info = await api("/api/info");
  for (const model of info.models) {
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = model.name;
    $("model").append(option);
  }
  $("model-picker").hidden = info.models.length < 2;
}

async function sendVoice(blob, filename) {
  $("error").textContent = "";
  $("result").hidden = true;
  $("busy").hidden = false;
  const form = new FormData();
  form.append("audio", blob, filename);
  form.append("model", chosenModel());
  try {
    showResult(await api("/api/generate", { method: "POST", body: form }));
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    $("busy").hidden = true;
  }
}

function personLabel(person) {
  return `${person.name} (${person.origin}) — similarity ${person.similarity.toFixed(3)}`;
}

function fillList(list, people) {
  list.replaceChildren(...people.map((person) => {
    const item = document.createElement("li");
    const face = document.createElement("img");
    face.src = `/api/people/${person.id}/face.png`;
    face.alt = person.name;
    face.className = "thumb";
    item.append(face, document.createTextNode(personLabel(person)));
    return item;
  }));
}

function showResult(result) {
  $("face").src = result.face.png;
  $("face").width = result.face.size;
  $("face").height = result.face.size;
  $("face-caption").textContent = result.face.emotion
    ? `emotion: ${result.face.emotion} (model ${result.model})` : `model ${result.model}`;
  const emotion = result.voice_emotion;
  $("voice-emotion").hidden = !emotion;
  if (emotion) {
    $("voice-emotion").textContent =
      `Emotion in the voice: ${emotion.emotion} (p = ${emotion.probability.toFixed(2)})`;
  }
  const [closest] = result.nearest_faces;
  $("closest").textContent = closest
    ? `The closest among these is ${closest.name} (similarity ${closest.similarity.toFixed(3)})`
    : "Nobody is enrolled yet.";
  fillList($("nearest-faces"), result.nearest_faces);
  const [voiceClosest] = result.nearest_voices;
  $("voice-closest").textContent = voiceClosest
    ? `The nearest voice is ${voiceClosest.name}'s` : "No enrolled voice to compare with.";
  fillList($("nearest-voices"), result.nearest_voices);
  $("audio-info").textContent = `${result.audio.duration_s.toFixed(2)} s heard, `
    + `${result.audio.speech_s.toFixed(2)} s of speech`;
  $("emotions-block").hidden = result.emotions.length === 0;
  $("emotions").replaceChildren(...result.emotions.map((face) => {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = face.png;
    image.alt = `face with emotion ${face.emotion}`;
    const caption = document.createElement("figcaption");
    caption.textContent = face.emotion;
    figure.append(image, caption);
    return figure;
  }));
  $("result").hidden = false;
}

async function toggleRecording() {
  if (recorder && recorder.state === "recording") {
    recorder.stop();
    return;
  }
  $("error").textContent = "";
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    $("error").textContent = `The microphone is not available: ${error.message}`;
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (event) => chunks.push(event.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((track) => track.stop());
    clearTimeout(recorder.limit);
    $("record").textContent = "Record from the microphone";
    $("record-status").textContent = "";
    sendVoice(new Blob(chunks, { type: recorder.mimeType }), "recording.webm");
  };
  recorder.start();
  // Stop a little before the server's limit: a longer recording would be refused.
  recorder.limit = setTimeout(() => recorder.stop(), (info.max_seconds - 1) * 1000);
  $("record").textContent = "Stop and generate";
  $("record-status").textContent = "recording…";
}

async function loadPeople() {
  const people = await api("/api/people");
  $("people-count").textContent = `${people.length} people`;
  $("people").replaceChildren(...people.map((person) => {
    const item = document.createElement("li");
    const face = document.createElement("img");
    face.src = `/api/people/${person.id}/face.png`;
    face.alt = person.name;
    face.className = "thumb";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.className = "remove";
    remove.onclick = () => removePerson(person);
    const voice = person.voices ? "voice" : "no voice";
    item.append(face, document.createTextNode(`${person.name} · ${person.origin} · ${voice} `),
      remove);
    return item;
  }));
}

async function removePerson(person) {
  try {
    await api(`/api/people/${person.id}`, { method: "DELETE" });
  } catch (error) {
    $("enrol-error").textContent = error.message;
  }
  await loadPeople();
}

async function enrol(event) {
  event.preventDefault();
  $("enrol-error").textContent = "";
  const form = new FormData($("enrol-form"));
  if (!$("enrol-voice").files.length) {
    form.delete("voice");
  }
  $("enrol-submit").disabled = true;
  try {
    await api("/api/people", { method: "POST", body: form });
    $("enrol-form").reset();
  } catch (error) {
    $("enrol-error").textContent = error.message;
  } finally {
    $("enrol-submit").disabled = false;
  }
  await loadPeople();
}

async function identify() {
  const [file] = $("identify-file").files;
  if (!file) {
    return;
  }
  $("enrol-error").textContent = "";
  const form = new FormData();
  form.append("face", file, file.name);
  form.append("model", chosenModel());
  try {
    fillList($("identified"), (await api("/api/identify", { method: "POST", body: form }))
      .nearest_faces);
  } catch (error) {
    $("enrol-error").textContent = error.message;
  }
}

function setUpDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const [file] = event.dataTransfer.files;
    if (file) {
      sendVoice(file, file.name);
    }
  });
  $("audio-file").addEventListener("change", () => {
    const [file] = $("audio-file").files;
    if (file) {
      sendVoice(file, file.name);
    }
    $("audio-file").value = "";  // choosing the same file again is a new request
  });
}

window.addEventListener("DOMContentLoaded", async () => {
  setUpDrop();
  $("record").addEventListener("click", toggleRecording);
  $("enrol-form").addEventListener("submit", enrol);
  $("identify-file").addEventListener("change", identify);
  try {
    await loadInfo();
    await loadPeople();
  } catch (error) {
    $("error").textContent = error.message;
  }
  document.body.dataset.ready = "true";
});
