const ws = new WebSocket(`ws://${location.host}/echo`);
ws.onmessage = (event) => console.log("received:", event.data);
ws.onopen = () => ws.send("hello");
