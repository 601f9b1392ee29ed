package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestLogLevelSetting(t *testing.T) {
	for value, want := range map[string]slog.Level{
		"": slog.LevelInfo, "debug": slog.LevelDebug, "DEBUG": slog.LevelDebug, " Info ": slog.LevelInfo,
		"warn": slog.LevelWarn, "Warn": slog.LevelWarn, "error": slog.LevelError, "ERROR": slog.LevelError,
	} {
		c, err := loadConfig(env(with(map[string]string{"LOG_LEVEL": value})))
		if err != nil || c.LogLevel != want {
			t.Errorf("LOG_LEVEL=%q: level %v (%v), want %v", value, c.LogLevel, err, want)
		}
	}
	for _, value := range []string{"verbose", "warning", "0", "debug+1"} {
		_, err := loadConfig(env(with(map[string]string{"LOG_LEVEL": value})))
		if err == nil {
			t.Errorf("LOG_LEVEL=%q accepted", value)
			continue
		}
		for _, w := range []string{"LOG_LEVEL", `"` + value + `"`, "debug, info, warn, error"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("LOG_LEVEL=%q: the error does not say %q: %v", value, w, err)
			}
		}
	}

	// `handler config` shows it, and refuses a bad one.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"config"}, env(minimal), &out, &out); err != nil || !strings.Contains(out.String(), "\nLOG_LEVEL=info\n") {
		t.Errorf("config: %v\n%s", err, out.String())
	}
	out.Reset()
	err := run(context.Background(), []string{"config"}, env(with(map[string]string{"LOG_LEVEL": "loud"})), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") || !strings.Contains(out.String(), "\nLOG_LEVEL=loud\n") {
		t.Errorf("config with LOG_LEVEL=loud: %v\n%s", err, out.String())
	}
	// Neither the handler nor the command line starts with a bad level.
	for _, args := range [][]string{{"serve"}, {"sync"}, {"runs"}} {
		e := with(map[string]string{"LOG_LEVEL": "loud", "FUNCTIONS_CUSTOMHANDLER_PORT": "1"})
		if err := run(context.Background(), args, env(e), &out, &out); err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") {
			t.Errorf("%v with LOG_LEVEL=loud: %v", args, err)
		}
	}
}

func TestLoggerHonoursLogLevel(t *testing.T) {
	emit := func(level string) string {
		var buf bytes.Buffer
		log := newLogger(&buf, env(map[string]string{"LOG_LEVEL": level}))
		log.Debug("d")
		log.Info("i")
		log.Warn("w")
		log.Error("e")
		// Loggers derived from it, as newApp's adapters and the function
		// handlers use, keep its level.
		log.With("run", "r").Debug("d2")
		log.WithGroup("g").Info("i2")
		var msgs []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var rec struct{ Msg string }
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			msgs = append(msgs, rec.Msg)
		}
		return strings.Join(msgs, " ")
	}
	for level, want := range map[string]string{
		"debug": "d i w e d2 i2", "": "i w e i2", "info": "i w e i2", "warn": "w e", "ERROR": "e",
		"bogus": "i w e i2", // loadConfig refuses it; the logger alone falls back to info
	} {
		if got := emit(level); got != want {
			t.Errorf("LOG_LEVEL=%q logged %q, want %q", level, got, want)
		}
	}
}

// Every logger the app builds gets the level: the engine, the poller and
// housekeeping (Graph and SharePoint are given the same logger; the
// end-to-end test sees SharePoint's debug lines).
func TestLogLevelReachesTheApp(t *testing.T) {
	e := with(map[string]string{"LOG_LEVEL": "debug", "IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token", "IDENTITY_HEADER": "h"})
	cfg, err := loadConfig(env(e))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a, err := newApp(cfg, newLogger(&buf, env(e)), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, l := range map[string]*slog.Logger{"app": a.log, "engine": a.engine.Log, "poller": a.poller.Log, "housekeeper": a.house.Log} {
		if l == nil || !l.Enabled(ctx, slog.LevelDebug) {
			t.Errorf("the %s logger does not log debug lines with LOG_LEVEL=debug", name)
		}
	}
}

var bicepLogLevel = regexp.MustCompile(`(?s)@allowed\(\[([^\]]*)\]\)\s*(?:@description\([^\n]*\)\s*)?param logLevel string = '(\w+)'`)

// The Bicep parameter behind LOG_LEVEL allows exactly the levels the
// handler takes, with its default; azd binds it from LOG_LEVEL.
func TestLogLevelInBicep(t *testing.T) {
	var names []string
	for _, l := range logLevels {
		names = append(names, l.name)
	}
	for _, file := range []string{"../infra/main.bicep", "../infra/modules/functionapp.bicep"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		m := bicepLogLevel.FindSubmatch(data)
		if m == nil {
			t.Errorf("%s: no param logLevel with @allowed values", file)
			continue
		}
		allowed := regexp.MustCompile(`'(\w+)'`).FindAllStringSubmatch(string(m[1]), -1)
		var got []string
		for _, a := range allowed {
			got = append(got, a[1])
		}
		if strings.Join(got, ",") != strings.Join(names, ",") || string(m[2]) != value(env(nil), "LOG_LEVEL") {
			t.Errorf("%s: logLevel allows %v, default %s; want %v, default %s", file, got, m[2], names, value(env(nil), "LOG_LEVEL"))
		}
	}
	src, _ := os.ReadFile("../infra/main.bicep")
	if got := moduleParams(t, string(src))["functionApp"].Args["logLevel"]; got != "logLevel" {
		t.Errorf("main.bicep passes logLevel: %q", got)
	}
	data, _ := os.ReadFile("../infra/main.parameters.json")
	var params struct {
		Parameters map[string]struct{ Value string } `json:"parameters"`
	}
	if err := json.Unmarshal(data, &params); err != nil {
		t.Fatal(err)
	}
	if got := params.Parameters["logLevel"].Value; got != "${LOG_LEVEL=info}" {
		t.Errorf("main.parameters.json: logLevel = %q, want ${LOG_LEVEL=info}", got)
	}
}
