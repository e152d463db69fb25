package config

import (
	"encoding"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// writeConfig writes text to a file in a test directory and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "petrel.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if c.Hostname == "" {
		t.Error("Hostname is empty")
	}
	if c.Limits.MaxMessageSize != 36700160 {
		t.Errorf("MaxMessageSize = %d, want 36700160", c.Limits.MaxMessageSize)
	}
	if c.Timeouts.Command.Duration != 5*time.Minute {
		t.Errorf("Command = %v, want 5m", c.Timeouts.Command)
	}
	// Each call returns an independent value.
	c.Domains[0] = "changed"
	if d := Default().Domains[0]; d != "localhost" {
		t.Errorf("Default() shares its Domains slice: got %q", d)
	}
}

func TestLoadOverlay(t *testing.T) {
	path := writeConfig(t, `
hostname = "mx.example.org"
domains = ["Example.COM.", "example.com", "b.example"]

[listeners]
submissions = ""

[limits]
max_recipients = 200

[timeouts]
data = "90s"
`)
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Hostname = "mx.example.org"
	want.Domains = []string{"example.com", "b.example"}
	want.Listeners.Submissions = ""
	want.Limits.MaxRecipients = 200
	want.Timeouts.Data = Duration{90 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load:\n got %+v\nwant %+v", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string // substrings of the error
	}{
		{"unknown top-level key", `hostnme = "x"`, []string{`unknown key "hostnme"`}},
		{"unknown nested key", "[limits]\nmax_recipient = 100\n", []string{`unknown key "limits.max_recipient"`}},
		{"unknown table", "[queue]\nretry = \"1h\"\n", []string{`unknown key "queue"`, `unknown key "queue.retry"`}},
		{"syntax error", "data_dir = \"x\"\n\nhostname = \n", []string{"line 3"}},
		{"wrong type", "[limits]\n\nmax_recipients = \"many\"\n", []string{"line 3", "limits.max_recipients"}},
		{"bad duration", "[timeouts]\ncommand = \"5 minutes\"\n", []string{"line 2", "timeouts.command", "invalid duration"}},
		{"duration as integer", "[timeouts]\ncommand = 300\n", []string{"timeouts.command", "invalid duration"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tt.text))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadParseErrorPosition(t *testing.T) {
	_, err := Load(writeConfig(t, "[limits]\nmax_errors = = 3\n"))
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) does not wrap toml.ParseError", err, err)
	}
	if pe.Position.Line != 2 {
		t.Errorf("Position.Line = %d, want 2", pe.Position.Line)
	}
	if !strings.Contains(pe.ErrorWithPosition(), "max_errors = = 3") {
		t.Errorf("ErrorWithPosition does not show the line:\n%s", pe.ErrorWithPosition())
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

// TestLoadAllProblems checks that a file with three mistakes yields three
// lines, each naming its file and key.
func TestLoadAllProblems(t *testing.T) {
	path := writeConfig(t, `
[limits]
max_recipients = 50
[timeouts]
data = "0s"
[log]
level = "verbose"
`)
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		"config: " + path + ": limits.max_recipients: 50 is below the RFC 5321 minimum of 100",
		"config: " + path + ": timeouts.data: must be positive, got 0s",
		"config: " + path + `: log.level: "verbose" is not one of "debug", "info", "warn", "error"`,
	}
	if !slices.Equal(lines, want) {
		t.Errorf("error lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // exact lines, in order; nil means valid
	}{
		{"default", func(*Config) {}, nil},
		{"trailing dot and upper case", func(c *Config) {
			c.Hostname = "MX.Example.ORG."
			c.Domains = []string{"Example.COM."}
		}, nil},
		{"empty domains allowed", func(c *Config) { c.Domains = nil }, nil},
		{"empty hostname", func(c *Config) { c.Hostname = "" }, []string{"hostname: must not be empty"}},
		{"bad hostname", func(c *Config) { c.Hostname = "mx_1.example" }, []string{
			`hostname: "mx_1.example" is not a valid host name: character '_' is not allowed`,
		}},
		{"empty data_dir", func(c *Config) { c.DataDir = "" }, []string{"data_dir: must not be empty"}},
		{"bad domains", func(c *Config) {
			c.Domains = []string{"ok.example", "a..b", "-x.example", "127.0.0.1", "bücher.example", strings.Repeat("a", 64) + ".example"}
		}, []string{
			`domains[1]: "a..b" is not a valid domain name: empty label`,
			`domains[2]: "-x.example" is not a valid domain name: label "-x" starts or ends with a hyphen`,
			`domains[3]: "127.0.0.1" is not a valid domain name: the last label is all digits`,
			`domains[4]: "bücher.example" is not a valid domain name: not ASCII; write an internationalized name in its xn-- form`,
			`domains[5]: "` + strings.Repeat("a", 64) + `.example" is not a valid domain name: label "` + strings.Repeat("a", 64) + `" is longer than 63 octets`,
		}},
		{"cert without key", func(c *Config) { c.TLS.Cert = "/etc/cert.pem" }, []string{"tls.key: must be set when tls.cert is set"}},
		{"key without cert", func(c *Config) { c.TLS.Key = "/etc/key.pem" }, []string{"tls.cert: must be set when tls.key is set"}},
		{"cert and key", func(c *Config) { c.TLS.Cert, c.TLS.Key = "c.pem", "k.pem" }, nil},
		{"listener without port", func(c *Config) { c.Listeners.MX = "127.0.0.1" }, []string{
			`listeners.mx: "127.0.0.1" is not a host:port address: address 127.0.0.1: missing port in address`,
		}},
		{"listener bad port", func(c *Config) { c.Listeners.Submission = ":smtp" }, []string{
			`listeners.submission: port "smtp" is not a number from 0 to 65535`,
		}},
		{"listener port too big", func(c *Config) { c.Listeners.Submission = ":65536" }, []string{
			`listeners.submission: port "65536" is not a number from 0 to 65535`,
		}},
		{"listener bad host", func(c *Config) { c.Listeners.Submissions = "bad host:465" }, []string{
			`listeners.submissions: host "bad host" is neither an IP address nor a valid host name`,
		}},
		{"listener IPv6 and name", func(c *Config) {
			c.Listeners.MX = "[::1]:25"
			c.Listeners.Submission = "localhost:587"
			c.Listeners.Submissions = ":465"
		}, nil},
		{"all listeners disabled", func(c *Config) { c.Listeners = Listeners{} }, []string{
			"listeners: every listener is disabled; set at least one of mx, submission, submissions",
		}},
		{"same address", func(c *Config) { c.Listeners.Submission = "127.0.0.1:2525" }, []string{
			`listeners.submission: "127.0.0.1:2525" conflicts with listeners.mx ("127.0.0.1:2525")`,
		}},
		{"wildcard overlaps", func(c *Config) {
			c.Listeners.MX = ":25"
			c.Listeners.Submission = "192.0.2.1:25"
			c.Listeners.Submissions = ""
		}, []string{
			`listeners.submission: "192.0.2.1:25" conflicts with listeners.mx (":25")`,
		}},
		{"IPv4 wildcard overlaps", func(c *Config) {
			c.Listeners.MX = "0.0.0.0:25"
			c.Listeners.Submission = "[::1]:25"
			c.Listeners.Submissions = "192.0.2.1:25"
		}, []string{
			`listeners.submissions: "192.0.2.1:25" conflicts with listeners.mx ("0.0.0.0:25")`,
		}},
		{"port 0 never conflicts", func(c *Config) {
			c.Listeners.MX = "127.0.0.1:0"
			c.Listeners.Submission = "127.0.0.1:0"
		}, nil},
		{"limits", func(c *Config) {
			c.Limits = Limits{MaxMessageSize: 1000, MaxRecipients: 99, MaxConnections: 10, MaxConnectionsPerIP: 11}
		}, []string{
			"limits.max_message_size: 1000 is below the RFC 5321 minimum of 65536",
			"limits.max_recipients: 99 is below the RFC 5321 minimum of 100",
			"limits.max_errors: must be at least 1, got 0",
			"limits.max_tls_handshakes: must be at least 1, got 0",
			"limits.max_connections_per_ip: 11 exceeds limits.max_connections (10)",
		}},
		{"timeouts", func(c *Config) {
			c.Timeouts = Timeouts{Command: Duration{5 * time.Millisecond}, Data: Duration{-time.Second}}
		}, []string{
			"timeouts.command: 5ms is below the minimum of 1s",
			"timeouts.data: must be positive, got -1s",
			"timeouts.tls_handshake: must be positive, got 0s",
			"timeouts.shutdown: must be positive, got 0s",
		}},
		{"log", func(c *Config) { c.Log = Log{Level: "INFO", Format: "xml"} }, []string{
			`log.level: "INFO" is not one of "debug", "info", "warn", "error"`,
			`log.format: "xml" is not one of "text", "json"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want:\n%s", strings.Join(tt.want, "\n"))
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("Validate():\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestDurationText(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"5m", 5 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false},
		{"250ms", 250 * time.Millisecond, false},
		{"0s", 0, false},
		{"5", 0, true},
		{"", 0, true},
		{"five minutes", 0, true},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr {
			t.Errorf("UnmarshalText(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if d.Duration != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, want %v", tt.in, d.Duration, tt.want)
		}
		text, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(text); err != nil || back != d {
			t.Errorf("round trip of %q: got %v, %v", tt.in, back, err)
		}
	}
}

// TestExample keeps example.toml in step with Default: it must load to
// Default (the host name is commented out, since its default depends on the
// machine) and it must name every key of Config.
func TestExample(t *testing.T) {
	got, err := Load("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example.toml:\n got %+v\nwant %+v", got, want)
	}

	var c Config
	md, err := toml.DecodeFile("example.toml", &c)
	if err != nil {
		t.Fatal(err)
	}
	inFile := make(map[string]bool)
	for _, k := range md.Keys() {
		inFile[k.String()] = true
	}
	text, err := os.ReadFile("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range leafKeys(reflect.TypeFor[Config](), "") {
		if key == "hostname" {
			if !strings.Contains(string(text), "\n#hostname = ") {
				t.Errorf("example.toml lacks the commented-out key %q", key)
			}
			continue
		}
		if !inFile[key] {
			t.Errorf("example.toml lacks the key %q", key)
		}
	}
}

// leafKeys lists the dotted TOML keys of the fields of t that hold values.
func leafKeys(t reflect.Type, prefix string) []string {
	textUnmarshaler := reflect.TypeFor[encoding.TextUnmarshaler]()
	var keys []string
	for f := range t.Fields() {
		name := prefix + f.Tag.Get("toml")
		if f.Type.Kind() == reflect.Struct && !reflect.PointerTo(f.Type).Implements(textUnmarshaler) {
			keys = append(keys, leafKeys(f.Type, name+".")...)
			continue
		}
		keys = append(keys, name)
	}
	return keys
}
